"""The landing's band floor (`MIN_BAND_SIZE`) on or off, over the same recorded NB201 searches.

    python benchmarks/band_floor.py --runs RUNS_DIR/beta-decay-ho-land --limit 700000

Each finished search folder under --runs (unconstrained searches, e.g. search_quality.py's landing-scope sweep)
is landed at a parameter budget twice with the library's `dcanas land` (`reland.land_search`): with the rule
off (`MIN_BAND_SIZE = 1`, the tightest non-empty band) and with the library's value. Prints a markdown table of
the true CIFAR-10 accuracy of each landing and the run-by-run comparison (BENCHMARKS.md §12).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="a folder of finished search folders (each with result.json)")
    p.add_argument("--limit", type=float, default=700_000, help="the parameter budget to land in")
    p.add_argument("--table", default=str(DEFAULT_TABLE), help="the NB201 CSV")
    args = p.parse_args(argv)

    from tqdm.auto import tqdm

    import dcanas.spaces.nb201.space as nb201_space
    from dcanas import search_loop
    from dcanas.reland import land_search
    from dcanas.spaces.nb201.bench import load_nb201_table

    search_loop.load_dataset = functools.lru_cache(maxsize=2)(search_loop.load_dataset)  # decode the data once
    bench = load_nb201_table(Path(args.table))
    searches = sorted(d for d in Path(args.runs).iterdir() if (d / "result.json").is_file())
    rules = {"off (MIN_BAND_SIZE = 1)": 1, f"on (MIN_BAND_SIZE = {nb201_space.MIN_BAND_SIZE})":
             nb201_space.MIN_BAND_SIZE}
    acc: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch, tqdm(total=len(rules) * len(searches), desc="landings") as bar:
        for label, size in rules.items():
            nb201_space.MIN_BAND_SIZE = size
            for i, searched in enumerate(searches):
                result = land_search(searched, {"max_params": args.limit}, Path(scratch) / f"{size}-{i}",
                                     log=lambda message: None)
                acc.setdefault(label, []).append(float(bench.accuracy["cifar10"][bench.row(result.genotype)]))
                bar.update(1)
    off, on = acc.values()
    print(f"{len(searches)} searches from {args.runs}, params <= {args.limit:,.0f}; {machine()}\n")
    print("| band floor | CIFAR-10 % | min |\n|---|---|---|")
    for label, values in acc.items():
        print(f"| {label} | {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} | {min(values):.2f} |")
    higher = sum(b > a + 1e-9 for a, b in zip(off, on))
    lower = sum(b < a - 1e-9 for a, b in zip(off, on))
    print(f"\nRun by run with the rule: higher in {higher}, lower in {lower}, equal in {len(on) - higher - lower}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
