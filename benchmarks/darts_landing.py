"""DARTS space: where the derived network lands in its budget, without and with --fill-budget, and what
filling is worth in trained accuracy.

    python benchmarks/darts_landing.py --seeds 0 1 2 --budgets 100K 150K 200K --train

On digits (built in), each (budget, seed) runs one `dcanas search` (the digits preset, `derived`
constraint, --fill-budget on): the derived genotype (after any repair) is what the search gives with
fill off, the final one what it gives with fill on; fill acts after the search, so one search measures
both. With --train both networks are trained with the digits preset on the same seed and scored on the
test split. Results go to RUNS_DIR/results.jsonl as each finishes (an interrupted study continues), the
summary to benchmarks/results/darts_landing.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import append_result, load_results, machine, mean_sd, study_command

ROOT = Path(__file__).resolve().parents[1]
BAND = (0.85, 1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", default=["100K", "150K", "200K"], help="params budgets")
    p.add_argument("--epochs", type=int, help="search epochs (default: the digits preset's)")
    p.add_argument("--train", action="store_true", help="also train both networks (digits preset) and test them")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "darts_landing")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "darts_landing.md")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from results.jsonl")
    return p.parse_args(argv)


def run_one(args: argparse.Namespace, budget: str, seed: int) -> dict:
    """One search (fill on) and, with --train, both networks trained and tested."""
    from dcanas.search_config import make_search_config
    from dcanas.search_loop import run_search
    from dcanas.spaces.darts.genotype import genotype_to_text
    from dcanas.train_loop import make_config, run_training
    from dcanas.units import parse_count

    limit = parse_count(budget)
    folder = args.runs_dir / f"{budget}-seed{seed}"
    config = make_search_config("digits", max_params=limit, seed=seed, fill_budget=True, epochs=args.epochs)
    t0 = time.perf_counter()
    result = run_search(config, folder / "search", progress=False, log=lambda m: None)
    record = {"budget": budget, "limit": limit, "seed": seed, "search_s": round(time.perf_counter() - t0, 1),
              "repaired": bool(result.repairs), "fills": len(result.fills),
              "unfilled": genotype_to_text(_unfilled(result)), "filled": genotype_to_text(result.genotype)}
    record["unfilled_params"] = _params(_unfilled(result), result.setting)
    record["filled_params"] = result.params
    if args.train:
        for which in ("unfilled", "filled"):
            if which == "filled" and not result.fills:
                record["filled_acc"] = record["unfilled_acc"]  # the same network
                continue
            train = make_config(record[which], dataset="digits", seed=seed)
            trained = run_training(train, folder / f"train-{which}", progress=False, log=lambda m: None)
            record[f"{which}_acc"] = trained.test_acc
    return record


def _unfilled(result):
    """The genotype the search gives with fill off: what fill started from (raw, or raw repaired)."""
    return result.unfilled_genotype if result.fills else result.genotype


def _params(genotype, setting) -> int:
    from dcanas.spaces.darts.cost import network_cost

    return network_cost(genotype, setting).params


def report(args: argparse.Namespace, rows: list[dict], command: str) -> str:
    lines = ["# DARTS space: budget landing without and with --fill-budget (digits)", "",
             f"```\n{command}\n```", "", f"Machine: {machine()}.", "",
             "| budget | seeds | use, fill off | in 85-100 %, off | use, fill on | in 85-100 %, on | repaired |"
             + (" test %, fill off | test %, fill on |" if args.train else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if args.train else "")]
    for budget in args.budgets:
        rs = [r for r in rows if r["budget"] == budget]
        if not rs:
            continue
        off = [r["unfilled_params"] / r["limit"] for r in rs]
        on = [r["filled_params"] / r["limit"] for r in rs]
        band = lambda us: f"{sum(BAND[0] <= u <= BAND[1] for u in us)}/{len(us)}"  # noqa: E731
        line = (f"| {budget} | {len(rs)} | {mean_sd(off)} | {band(off)} | {mean_sd(on)} | {band(on)} | "
                f"{sum(r['repaired'] for r in rs)}/{len(rs)} |")
        if args.train:
            line += (f" {mean_sd([r['unfilled_acc'] for r in rs if 'unfilled_acc' in r], scale=100)} |"
                     f" {mean_sd([r['filled_acc'] for r in rs if 'filled_acc' in r], scale=100)} |")
        lines.append(line)
    lines += ["", "## Every run", "", "| budget | seed | fill off: params | fill on: params | fills | genotype, fill on |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['budget']} | {r['seed']} | {r['unfilled_params']:,} | {r['filled_params']:,} | {r['fills']} | "
              f"`{r['filled']}` |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = study_command("benchmarks/darts_landing.py", sys.argv[1:] if argv is None else argv)
    path = args.runs_dir / "results.jsonl"
    if not args.report_only:
        from tqdm.auto import tqdm

        args.runs_dir.mkdir(parents=True, exist_ok=True)
        done = {(r["budget"], r["seed"]) for r in load_results(path)}
        plan = [(b, s) for s in args.seeds for b in args.budgets if (b, s) not in done]
        for budget, seed in tqdm(plan, desc="searches", dynamic_ncols=True):
            append_result(path, run_one(args, budget, seed))
    rows = [r for r in load_results(path) if r["budget"] in args.budgets and r["seed"] in args.seeds]
    text = report(args, rows, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
