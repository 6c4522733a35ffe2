"""Do the zero-cost proxies rank trained DARTS-space networks as their test accuracy does? (Fashion-MNIST)

Reads every trained run of the given end-to-end reports (`| budget | method | seed | `Genotype(...)` | params |
test % | ...`, the "Every run" table of `benchmarks/end_to_end.py`; the width from the report's summary table),
takes each distinct network once (the baseline, trained on several seeds, at its mean accuracy), builds it as
it was trained (8 cells, `--image-size`), scores it with each proxy `--rerank` can use on the same fixed
batch of training images `dcanas search` draws (64 images, seed 0), and prints every score beside the
accuracy, then Spearman's rank correlation between each proxy and the accuracy, per budget and over all.
A proxy worth voting in the DARTS landing should rank these networks as their accuracy does.

    python benchmarks/proxy_rank_darts.py benchmarks/results/end_to_end_fashion-mnist_14px_*.md
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

SUMMARY_ROW = re.compile(r"^\| (\S+) \| ([^|]+?) \| (\d+) \| [\d,]+ \|")  # budget, method, width, params
RUN_ROW = re.compile(r"^\| (\S+) \| ([^|]+?) \| (\d+) \| `(Genotype\(.*?\))` \| ([\d,]+) \| ([\d.]+) \|")
PROXIES = ("synflow", "naswot", "meco")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reports", nargs="+", type=Path, help="markdown reports of benchmarks/end_to_end.py")
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--image-size", type=int, default=14)
    p.add_argument("--seed", type=int, default=0, help="the draw of the image batch and of each network's init")
    args = p.parse_args()

    import torch

    from dcanas.data import load_dataset
    from dcanas.proxies import proxy_score
    from dcanas.search_loop import fixed_batch, PROBE_IMAGES
    from dcanas.spaces.darts.genotype import parse_genotype
    from dcanas.spaces.darts.network import build_network, eval_setting_for

    data = load_dataset("fashion-mnist", image_size=args.image_size)
    images = fixed_batch(data, torch.arange(len(data.train_y)), PROBE_IMAGES, args.seed)[0].cpu()
    trained: dict[tuple[str, str, int], dict] = {}  # (budget, genotype, width): the networks, each once
    for report in args.reports:
        lines = report.read_text().splitlines()
        widths = {(m.group(1), m.group(2)): int(m.group(3)) for m in map(SUMMARY_ROW.match, lines) if m}
        for match in filter(None, map(RUN_ROW.match, lines)):
            budget, method, seed, text, _, accuracy = match.groups()
            key = (budget, text, widths[(budget, method)])
            entry = trained.setdefault(key, dict(report=report.name, budget=budget, method=method, seeds={}))
            entry["seeds"][int(seed)] = float(accuracy)
    rows = []
    for (budget, text, width), entry in trained.items():
        setting = eval_setting_for("fashion-mnist", cells=args.cells, channels=width, image_size=args.image_size,
                                   auxiliary=False)
        scores = {}
        for name in PROXIES:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                net = build_network(parse_genotype(text), setting)
            scores[name] = proxy_score(name, net, images, args.seed, in_place=True)
        accuracy = sum(entry["seeds"].values()) / len(entry["seeds"])
        rows.append(dict(entry, width=width, accuracy=accuracy, **scores))
    print(f"{len(rows)} trained networks; proxies on {PROBE_IMAGES} training images (seed {args.seed}), "
          f"{args.image_size} px")
    print("| report | budget | method | width | seeds | test % (mean) | " + " | ".join(PROXIES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(PROXIES))
    for r in rows:
        print(f"| {r['report']} | {r['budget']} | {r['method']} | {r['width']} | "
              f"{','.join(map(str, sorted(r['seeds'])))} | {r['accuracy']:.2f} | "
              + " | ".join(f"{r[n]:.4g}" for n in PROXIES) + " |")
    print()
    print("| networks | n | " + " | ".join(f"Spearman {n}" for n in PROXIES) + " | DARTS_V2's rank by " +
          ", ".join(PROXIES) + " (1 = top) |")
    print("|---|---|" + "---|" * (len(PROXIES) + 1))
    groups = {f"budget {b}": [r for r in rows if r["budget"] == b] for b in sorted({r["budget"] for r in rows})}
    groups["all"] = rows
    for label, group in groups.items():
        if len(group) < 3:
            continue
        accuracy = [r["accuracy"] for r in group]
        correlations = " | ".join(f"{spearman([r[n] for r in group], accuracy):+.2f}" for n in PROXIES)
        baseline = [i for i, r in enumerate(group) if r["method"].startswith("DARTS_V2")]
        ranks = ", ".join(str(1 + sum(r[n] > group[baseline[0]][n] for r in group)) if baseline else "-"
                          for n in PROXIES)
        print(f"| {label} | {len(group)} | {correlations} | {ranks} of {len(group)} |")


if __name__ == "__main__":
    main()
