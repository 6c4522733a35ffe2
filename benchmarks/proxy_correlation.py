"""How well each zero-cost proxy ranks NAS-Bench-201 against the table's true accuracy (why meco joined --rerank).

    python benchmarks/proxy_correlation.py                   # from the cached scores, seconds
    python benchmarks/proxy_correlation.py --images-check 200  # also meco on 1..64 images, ~5 min on one core

Spearman's rank correlation of each proxy in `nb201_proxies.json` (the scores `rerank_rules.py` caches: the
library's proxies on networks built from seed 0) with CIFAR-10 test accuracy, over every none-free cell it
scored and inside each budget's 85-100 % band, the rerank's ground. A proxy can rank the whole space well and
still order the cells of one band badly, which is what the landing needs. `--images-check N` scores N random
none-free cells with meco on 1, 2, 8 and 64 images of the probe batch (`MECO_IMAGES`' choice).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import bench_truth, budget_label, cost_of, machine, study_command

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10_jpg.tar.gz"
BUDGETS = [{"metric": "latency", "device": d, "limit": v} for d, vs in
           (("pixel3", (6.6, 10.4, 13.9)), ("raspi4", (16.3, 25.6, 34.5))) for v in vs] + \
          [{"metric": "params", "device": None, "limit": v} for v in (400_000, 700_000)]  # search_quality.py's


def spearmanr(x: Any, y: Any) -> tuple[float]:
    """Spearman's rho (ties share their average rank), shaped as scipy's result's first item."""
    def ranks(v: Any) -> np.ndarray:
        _, inverse, counts = np.unique(np.asarray(v, dtype=np.float64), return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return ((ends - counts + ends - 1) / 2)[inverse]
    return (float(np.corrcoef(ranks(x), ranks(y))[0, 1]),)


def images_check(count: int, table: str, data_dir: str) -> list[str]:
    """Markdown rows: meco's Spearman on `count` random none-free cells with 1, 2, 8 and 64 images, and its time."""
    import torch

    import dcanas.proxies as proxies
    from dcanas.data import load_dataset
    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import probe_batch
    from dcanas.spaces import SPACES
    from dcanas.spaces.nb201.network import NB201Setting

    torch.set_num_threads(1)
    bench, _, none_free = bench_truth(table)
    rows = random.Random(1).sample(list(np.flatnonzero(none_free)), count)
    images = probe_batch(load_dataset("imagefolder", data_dir), SearchConfig(space="nb201", seed=0))
    space, lines = SPACES.get("nb201"), ["| meco images | Spearman | s a network (one core) |", "|---|---|---|"]
    for n in (1, 2, 8, 64):
        proxies.MECO_IMAGES, scores, seconds = n, [], 0.0
        for r in rows:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                net = space.build_network(bench.archs[r], NB201Setting())
            t0 = time.perf_counter()
            scores.append(proxies.proxy_score("meco", net, images, 0, in_place=True))
            seconds += time.perf_counter() - t0
        lines.append(f"| {n} | {spearmanr(scores, bench.accuracy['cifar10'][rows])[0]:.3f} | {seconds / count:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(RESULTS / "nb201_proxies.json"))
    p.add_argument("--table", default=str(DEFAULT_TABLE))
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--images-check", type=int, default=0, metavar="N", help="also meco on 1-64 images of N cells")
    p.add_argument("--out", default=str(RESULTS / "proxy_correlation.md"))
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    cache = json.loads(Path(args.cache).read_text())
    bench, params, none_free = bench_truth(args.table)
    acc = bench.accuracy["cifar10"]
    scored = {name: {bench.row(a): v for a, v in s.items()} for name, s in cache.items()}
    full = [name for name, s in scored.items() if len(s) == int(none_free.sum())]  # naswot: a sample only
    where = [("every none-free cell", none_free)] + [
        (budget_label(b) + " 85-100 %", none_free & (cost_of(b, args.table) <= b["limit"])
         & (cost_of(b, args.table) >= 0.85 * b["limit"])) for b in BUDGETS]
    lines = ["| cells | count | " + " | ".join(full) + " | params |", "|---|---|" + "---|" * (len(full) + 1)]
    for label, mask in where:
        rows = np.flatnonzero(mask)
        rho = [spearmanr([scored[n][r] for r in rows], acc[rows])[0] for n in full] + [spearmanr(params[rows], acc[rows])[0]]
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(f"{x:.2f}" for x in rho) + " |")
    extra = ["", *images_check(args.images_check, args.table, args.data)] if args.images_check else []
    text = "\n".join(["# Zero-cost proxies against NAS-Bench-201's CIFAR-10 accuracy (Spearman)", "", "```",
                      study_command("benchmarks/proxy_correlation.py", argv), "```", "", f"{machine()}.", "",
                      *lines, *extra, ""])
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
