"""How far does one search land from its budget? The paper's k_s without and with a look-up graph, and ours.

    python benchmarks/budget_landing.py --epochs 6 --workers 2

On digits (built in), for five params budgets between the deployable bounds, it runs

  (a) constraint 'paper' (DCA-NAS eq. 3) without a LUG: search budget = device budget, no repair;
  (b) constraint 'paper' with a LUG this script builds (searches at a few search budgets, fitted);
  (c) constraint 'derived' (dcanas's default: exact derived size, straight-through gradient), no LUG;

and reports the size of each search's derived network (before repair) relative to the budget and
whether repair was needed. (a)'s searches are the LUG's points at K_d' = budget: a LUG point is a
'paper' search with that search budget and no repair, and the device budget (loose there) only
matters to repair, so the two runs are the same search. Writes benchmarks/results/budget_landing.md,
docs/budget_landing.png and docs/lug.png.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import NOTES, machine
from dcanas.lug import (
    BUILD_FILE,
    LUG_PLOT,
    LugError,
    build_lug,
    run_tasks,
    uniform_search_size,
)
from dcanas.threads import available_cores
from dcanas.data import dataset_info
from dcanas.search_config import SearchConfig
from dcanas.search_loop import prepare_search
from dcanas.spaces.darts.genotype import parse_genotype

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (0.05, 0.15, 0.25, 0.35, 0.45)  # of the deployable range [low, high]
EXTRA_LUG_POINTS = 2  # above the largest budget, up to the uniform-alpha k_s


def pct(value: float, budget: float) -> str:
    """+35% over / -3% under."""
    return f"{100 * (value / budget - 1):+.1f}%"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6, help="search epochs of every run (digits preset: 15)")
    p.add_argument("--workers", type=int, default=available_cores())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(ROOT / "runs" / f"budget_landing-{time.strftime('%Y%m%d-%H%M%S')}"))
    p.add_argument("--max-steps", type=int, help="cap every search (smoke test of this script only)")
    p.add_argument("--no-write", action="store_true", help="print only; leave the results file and docs alone")
    args = p.parse_args()
    started, info = time.perf_counter(), machine()
    out = Path(args.out_dir)

    base = SearchConfig.from_dict({**SearchConfig().to_dict(), **dataset_info("digits").search_preset, "dataset": "digits",
                                   "epochs": args.epochs, "seed": args.seed, "max_steps": args.max_steps})
    _, setting, table, _ = prepare_search(base)
    low, high = table.bounds("params")
    budgets = [float(round(low + f * (high - low), -3)) for f in FRACTIONS]
    top = uniform_search_size(table, "params")
    lug_budgets = budgets + [float(round(v, -3)) for v in np.linspace(budgets[-1], top, EXTRA_LUG_POINTS + 1)[1:]]
    print(f"digits, params, deployed {setting.cells} cells x {setting.channels} channels: deployable "
          f"{low:,.0f} .. {high:,.0f}; budgets {', '.join(f'{b:,.0f}' for b in budgets)}", file=sys.stderr)

    # (a) and the LUG: paper searches at K_d' in lug_budgets, no repair
    # rerunning with the same --out-dir reads finished searches back (to redo the report), keeping first timings
    timing_file = out / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    t0 = time.perf_counter()
    lug, lug_dir = build_lug(base, "params", lug_budgets, seeds=[args.seed], run_dir=out / "lug",
                             resume=(out / "lug" / BUILD_FILE).is_file(), workers=args.workers,
                             log=lambda m: print(m, file=sys.stderr))
    lug_seconds = timings.setdefault("lug", time.perf_counter() - t0)
    timing_file.write_text(json.dumps(timings))
    paper_at = {p.search_budget: p for p in lug.points}

    # (b) paper with the LUG's search budget, (c) derived; both as a user runs them, repair on
    tasks = []
    for k in budgets:
        device = dict(max_params=k, repair=True)
        with_lug = replace(base, **device, constraint=lug.constraint)
        lug.check_config(with_lug)
        try:
            with_lug.search_budgets = lug.search_budgets(with_lug.budgets())
        except LugError as exc:  # below what the LUG reached: `dcanas search --lug` refuses it the same way
            print(f"(b) at {k:,.0f}: {exc}", file=sys.stderr)
            with_lug = None
        derived = replace(base, **device, constraint="derived", search_budgets={})
        for name, config in (("b", with_lug), ("c", derived)):
            if config is None:
                continue
            tasks.append({"config": config.to_dict(), "run_dir": str(out / f"{name}-params-{k:.0f}"), "threads":
                          max(1, available_cores() // args.workers), "method": name, "budget": k})
    t0 = time.perf_counter()
    runs = {}
    for n, done in enumerate(run_tasks(tasks, args.workers), 1):
        runs[done["task"]["method"], done["task"]["budget"]] = done
        print(f"searches (b), (c): {n}/{len(tasks)}", file=sys.stderr)
    bc_seconds = timings.setdefault("bc", time.perf_counter() - t0)
    timings.setdefault("machine", info)
    timing_file.write_text(json.dumps(timings))
    info = timings["machine"]

    rows = []
    for k in budgets:
        a = paper_at[k]
        row = {"budget": k, "a_raw": a.derived, "a_acc": a.val_acc}
        for name in ("b", "c"):
            if (name, k) not in runs:
                row[f"{name}_raw"] = None
                continue
            result = runs[name, k]["result"]
            row[f"{name}_raw"] = table.genotype_cost(parse_genotype(result["raw_genotype"]))["params"]
            row[f"{name}_final"] = result["params"]
            row[f"{name}_repairs"] = len(result["repairs"])
            row[f"{name}_acc"] = runs[name, k]["val_acc"]
        row["b_search"] = runs["b", k]["task"]["config"]["search_budgets"]["params"] if ("b", k) in runs else None
        rows.append(row)
    total = lug_seconds + bc_seconds + timings.setdefault("setup", time.perf_counter() - started - lug_seconds
                                                          - bc_seconds)
    timing_file.write_text(json.dumps(timings))

    head = ("| budget K_d | (a) paper, K_d'=K_d: derived | vs budget | repair needed | (b) paper + LUG: K_d' "
            "| derived | vs budget | repair | (c) derived: derived | vs budget | repair |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["b_raw"] is None:
            b_cells = "refused: below the LUG's smallest derived size | | | "
        else:
            b_cells = f"{r['b_search']:,.0f} | {r['b_raw']:,.0f} | {pct(r['b_raw'], r['budget'])} | {_repair(r, 'b')} "
        lines.append(
            f"| {r['budget']:,.0f} | {r['a_raw']:,.0f} | {pct(r['a_raw'], r['budget'])} "
            f"| {'yes' if r['a_raw'] > r['budget'] else 'no'} | {b_cells}| {r['c_raw']:,.0f} "
            f"| {pct(r['c_raw'], r['budget'])} | {_repair(r, 'c')} |")
    summary = []
    for name, key in (("(a) paper, no LUG", "a_raw"), ("(b) paper + LUG", "b_raw"), ("(c) derived", "c_raw")):
        dev = np.array([r[key] / r["budget"] - 1 for r in rows if r[key] is not None])
        if not len(dev):
            summary.append(f"| {name} | | | refused every budget |")
            continue
        over = int((dev > 0).sum())
        summary.append(f"| {name} | {100 * np.abs(dev).mean():.1f}% | {100 * dev.min():+.1f}% .. "
                       f"{100 * dev.max():+.1f}% | {over}/{len(dev)} |")
    table_md = "\n".join(lines)
    summary_md = "\n".join(["| method | mean abs deviation | range | over budget (repair needed) |",
                            "|---|---|---|---|", *summary])
    print(table_md + "\n\n" + summary_md)
    print(f"\n{total / 60:.1f} min in all (LUG {lug_seconds / 60:.1f} min, (b)+(c) {bc_seconds / 60:.1f} min)")
    if args.no_write:
        return 0

    plot(rows, ROOT / "docs" / "budget_landing.png", args.epochs)
    shutil.copyfile(lug_dir / LUG_PLOT, ROOT / "docs" / "lug.png")
    command = "python benchmarks/budget_landing.py " + " ".join(sys.argv[1:])
    lug_rows = "\n".join(f"| {p.search_budget:,.0f} | {p.search_size:,.0f} | {p.derived:,.0f} "
                         f"| {lug.fitted(p.search_budget):,.0f} |" for p in lug.points)
    out_md = ROOT / "benchmarks" / "results" / "budget_landing.md"
    notes = ""
    if out_md.is_file() and NOTES in out_md.read_text():
        notes = out_md.read_text().split(NOTES, 1)[1]  # hand-written reading of the figures survives a rerun
    report = f"""# Budget landing: how far one search lands from its params budget

Command: `{command.strip()}` (from the repository root; {total / 60:.1f} min wall in all: LUG
{lug_seconds / 60:.1f} min, searches (b) and (c) {bc_seconds / 60:.1f} min, {args.workers} worker processes).

Machine: {info}.

Setting: digits (built in, 8x8 grey), deployed network {setting.cells} cells x {setting.channels} channels
(auxiliary head excluded from params), deployable params {low:,.0f} .. {high:,.0f}. Every search: the digits
preset (supernet 8 cells x 16 channels, bottleneck 4, weight sharing, derived cells, batch 64, lr 0.1,
arch lr 3e-3, lambda lr 0.05), seed {args.seed}, **{args.epochs} epochs** ({lug.points[0].steps} steps).

- (a) constraint `paper` (DCA-NAS eq. 3, softmax-weighted k_s) with search budget = device budget, no repair.
  These are the LUG's searches at K_d' = K_d (same search: the device budget only matters to repair).
- (b) constraint `paper` with the look-up graph built here from the {len(lug.points)} searches below (isotonic
  fit, linear between knots): a budget is searched at the largest K_d' whose fitted K_d fits in it; repair
  on, as `dcanas search --lug` runs.
- (c) constraint `derived` (dcanas's default), no LUG, repair on.

"derived" is the exact params count of the network derived from the final alphas *before* repair;
"vs budget" is derived / budget - 1 (+ over, - under); "repair" says whether repair had to replace ops
(how many) to meet the budget.

{table_md}

{summary_md}

![budget landing](../../docs/budget_landing.png)

![look-up graph](../../docs/lug.png)

The look-up graph (k_s at end: the paper's softmax-weighted estimate when the search stopped; a
search has converged when it is at or below K_d'):

| K_d' (search budget) | k_s at end | derived K_d | fitted K_d |
|---|---|---|---|
{lug_rows}

What was cut to fit ~15 minutes on a shared 2-core CPU: {args.epochs} search epochs instead of the digits
preset's 15 (the paper: 50 on CIFAR, "until convergence" for each LUG point), one seed per budget (the
paper reports the best of 5 searches), and a {len(lug.points)}-point LUG. The figures show where each
method lands after this short schedule, not after a converged search.

{NOTES}{notes}"""
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(report)
    print(f"wrote {out_md.relative_to(ROOT)}, docs/budget_landing.png, docs/lug.png; runs in {out}")
    return 0


def _repair(row: dict, name: str) -> str:
    n = row[f"{name}_repairs"]
    return f"yes ({n} op{'s' if n > 1 else ''})" if n else "no"


def plot(rows: list[dict], path: Path, epochs: int) -> None:
    """Derived size relative to the budget, per budget and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = np.array([r["budget"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.26
    x = np.arange(len(rows))
    for k, (key, label) in enumerate((("a_raw", "(a) paper k_s, search budget = budget"),
                                      ("b_raw", "(b) paper k_s + look-up graph"),
                                      ("c_raw", "(c) derived (dcanas default)"))):
        values = 100 * (np.array([np.nan if r[key] is None else r[key] for r in rows]) / budgets - 1)
        bars = ax.bar(x + (k - 1) * width, values, width, label=label, color=f"C{k}")
        ax.bar_label(bars, fmt="%+.0f", fontsize=6, padding=1)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [f"{b / 1e3:.0f}K" for b in budgets])
    ax.set_xlabel("params budget of the deployed network (digits, 8 cells x 16 channels)")
    ax.set_ylabel("derived size vs budget, before repair (%)")
    ax.set_title(f"Where one search lands ({epochs} epochs; above 0 = over budget, repair needed)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
