"""Is the search better than picking at random? NAS-Bench-201 searches against random cells of the same budget.

The sceptic's first baseline for any NAS result (Li & Talwalkar 2019; Yang et al. 2020, "NAS evaluation is
frustratingly hard"): what would a cell drawn uniformly at random have scored? NAS-Bench-201's table answers it
exactly, with no training. For each budget of a `search_quality.py` record this prints the searches' CIFAR-10 test
accuracy beside

- **random in band**: the mean ± sd over every none-free cell a landing could have returned (85-100 % of the
  budget, `landing.LANDING_BAND`; unconstrained: all 4,096 none-free cells), i.e. a random pick's expectation;
- **percentile**: the share of those cells the found one beats (ties count half), averaged over the seeds;
- **best of N random**: the expected best of N uniform draws from the band (exact, from the order statistics),
  with N the seeds the searches used, so a sceptic can weigh "N searches" against "N table look-ups";
- the best in the band and the best within the budget (what regret counts from).

    python benchmarks/against_random.py benchmarks/results/search_quality_knobs/ho3_rrb.json \
        benchmarks/results/search_quality_knobs/ho3.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from common import bench_truth, budget_label, mean_sd, within_budget

from dcanas.landing import LANDING_BAND
from dcanas.spaces.nb201.bench import share_beaten

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT.parent / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"


def band_accuracies(budget: dict[str, Any] | None, table_path: str, band: float = LANDING_BAND) -> np.ndarray:
    """CIFAR-10 test accuracy of every none-free cell using `band`..100 % of `budget` (all none-free: no budget)."""
    ok = within_budget(budget, table_path, floor=band)
    return np.asarray(bench_truth(table_path)[0].accuracy["cifar10"][ok], dtype=np.float64)


def expected_best_of(population: np.ndarray, draws: int) -> float:
    """E[max of `draws` independent uniform picks from `population`] (exact, by the empirical CDF)."""
    values = np.sort(population)
    n = len(values)
    cdf_at = np.arange(1, n + 1) / n  # P(pick <= values[i])
    cdf_below = np.arange(0, n) / n
    return float(np.sum(values * (cdf_at ** draws - cdf_below ** draws)))


def records(paths: list[Path]) -> list[dict[str, Any]]:
    """Every search record of the files: a file's landed `consensus` records when it has them, else its runs."""
    out: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(path.read_text())
        chosen = data.get("consensus") or data["runs"]
        seen = {(json.dumps(r["budget"], sort_keys=True), r["seed"]) for r in out}
        out += [r for r in chosen if (json.dumps(r["budget"], sort_keys=True), r["seed"]) not in seen]
    return out


def table_rows(runs: list[dict[str, Any]], table_path: str) -> list[dict[str, Any]]:
    """One row per budget, in the order the budgets first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(json.dumps(r["budget"], sort_keys=True), []).append(r)
    rows = []
    for key, rs in groups.items():
        budget = json.loads(key)
        band = band_accuracies(budget, table_path)
        found = [r["test_acc_cifar10"] for r in rs]
        rows.append({"budget": budget, "found": found, "band": band,
                     "percentile": [share_beaten(a, band) for a in found],
                     "best_of_n": expected_best_of(band, len(rs)), "best_band": float(band.max()),
                     "best_budget": max(r["best_in_budget"] for r in rs)})
    return rows


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The table, and a last line over the constrained budgets."""
    lines = ["| budget | seeds | found % | random in band % (cells) | found beats (percentile) | "
             "best of N random (N = seeds) | best in band | best in budget |", "|---|---|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {budget_label(x['budget'])} | {len(x['found'])} | {mean_sd(x['found'])} | "
                     f"{mean_sd(list(x['band']))} ({len(x['band']):,}) | {mean_sd(x['percentile'], digits=1)} % | "
                     f"{x['best_of_n']:.2f} | {x['best_band']:.2f} | {x['best_budget']:.2f} |")
    con = [x for x in rows if x["budget"] is not None]
    if con:
        found = [a for x in con for a in x["found"]]
        rand = [float(x["band"].mean()) for x in con for _ in x["found"]]
        pct = [p for x in con for p in x["percentile"]]
        lines += ["", f"Constrained, all {len(found)} runs: found {np.mean(found):.2f} %, a random in-band cell "
                      f"{np.mean(rand):.2f} % on average (+{np.mean(found) - np.mean(rand):.2f} points for the search); "
                      f"the found cell beats {np.mean(pct):.1f} % of its band on average (min {min(pct):.1f} %)."]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="search_quality.py json records (the issue's format)")
    p.add_argument("--table", default=str(TABLE), help="the NB201 CSV (default: ../shared/data/nb201)")
    p.add_argument("--out", type=Path, help="also write the table here (markdown)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [str(p) for p in args.results if not p.is_file()] + ([args.table] if not Path(args.table).is_file() else [])
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    text = "\n".join(markdown(table_rows(records(args.results), args.table)))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
