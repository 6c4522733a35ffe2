"""End to end on real data: DCA-NAS (search, then train) vs DARTS_V2 narrowed to the same budget.

For every budget B (parameters, or with `--metric memory` peak activation bytes of one fp32 inference)
and seed:

- **DCA-NAS**: `dcanas search --max-params B --cells N --channels auto` (or `--max-memory B`), then
  `dcanas train RUN` (the searched genotype, in the network the search budgeted);
- **DARTS_V2 narrowed**: `dcanas train DARTS_V2 --cells N --channels C`, C the widest (even) width
  whose network fits B;

- **random cell** (the sanity baseline of NAS evaluation, Li & Talwalkar 2019; Yang et al. 2020): uniformly random
  cells of the same space (`random_genotype`, seeded by the run's seed), redrawn until the network at the
  searched width uses 85-100 % of the budget, as a searched one is landed; what the search must beat to have
  found anything;

all trained with the identical recipe. Every step is a `dcanas` process with one torch thread;
`--jobs` of them run at once. Results go to RUNS_DIR/results.jsonl as they finish, so an interrupted
study continues where it stopped; the table (markdown) and the plot are rebuilt from that file.

    python benchmarks/end_to_end.py --dataset fashion-mnist --budgets 250K 500K 1M
    python benchmarks/end_to_end.py --dataset imagefolder --data-dir ../shared/data/cifar10-jpeg --budgets 500K
    python benchmarks/end_to_end.py --dataset fashion-mnist --metric memory --budgets 600K
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import cifar10_batches, data_argv, load_results, machine, mean_sd, run_dcanas, study_command, train_argv

from dcanas.commands.common import parse_count
from dcanas.spaces.darts.cost import build_cost_table, network_cost
from dcanas.search_config import SearchConfig
from dcanas.search_loop import dry_run
from dcanas.landing import LANDING_BAND
from dcanas.constraint import Budget
from dcanas.errors import BudgetError
from dcanas.spaces.darts.candidates import in_band, random_in_band
from dcanas.spaces.darts.genotype import GENOTYPES, genotype_to_text, load_genotype
from dcanas.spaces.darts.network import EvalSetting
from dcanas.spaces.darts.peak import genotype_peak_elements

BASELINE = "DARTS_V2"
METHODS = ("DCA-NAS", f"{BASELINE} narrowed", "random cell")
DEFAULT_METHODS = METHODS[:2]
METRICS = ("params", "memory")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: the reduced CPU study in BENCHMARKS.md)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--image-size", type=int,
                   help="resize every image to this many pixels square, for search and both trainings (default: as "
                        "loaded); parameter budgets do not depend on it, FLOPs do")
    p.add_argument("--budgets", nargs="+", default=["250K", "500K", "1M"], help="deployed budgets (of --metric)")
    p.add_argument("--metric", choices=METRICS, default="params",
                   help="what the budgets limit: parameters, or peak activation bytes of one fp32 inference")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS),
                   help="run only these (e.g. a second DCA-NAS setting beside baselines already trained)")
    p.add_argument("--cells", type=int, default=8, help="cells of the deployed network (both methods)")
    g = p.add_argument_group("search")
    g.add_argument("--search-epochs", type=int, default=50)
    g.add_argument("--search-steps", type=int, help="stop each search after this many steps")
    g.add_argument("--search-batch", type=int, default=64)
    g.add_argument("--arch-lr", type=float, help="alpha learning rate (default: the paper's 6e-4)")
    g.add_argument("--search-warmup", type=float, help="weights-only warm-up epochs of each search (default 0)")
    g.add_argument("--max-skips", type=int, help="cap on skip connections in the searched normal cell (default none)")
    g.add_argument("--search-cells", type=int, help="supernet cells (default: dcanas search's 8)")
    g.add_argument("--reduce-cell", help="fix the searched networks' reduction cell to this named genotype's "
                                         "(dcanas search --reduce-cell; default: searched)")
    g.add_argument("--width", default="auto",
                   help="the searched network's width: 'auto' (dcanas search --channels auto), 'baseline' (the narrowed "
                        "DARTS_V2's, so only the cells differ) or a number")
    g = p.add_argument_group("training (identical for both methods)")
    g.add_argument("--train-epochs", type=int, default=600)
    g.add_argument("--train-subset", type=int, help="class-balanced subset of the training images")
    g.add_argument("--train-batch", type=int, default=96)
    g.add_argument("--lr", type=float, default=0.025)
    g.add_argument("--cutout", type=int, default=16)
    g.add_argument("--drop-path", type=float, default=0.2)
    g.add_argument("--eval-every", type=int, help="evaluate the test set every this many epochs (default: each)")
    g.add_argument("--device", default="cpu")
    p.add_argument("--as-cifar10", metavar="DIR",
                   help="decode an imagefolder of CIFAR-10 once into CIFAR's python batches in DIR and use those "
                        "(each dcanas process then loads in a second instead of decoding 60,000 JPEGs)")
    p.add_argument("--jobs", type=int, default=2, help="dcanas processes at once (one thread each)")
    p.add_argument("--runs-dir", help="default: runs/end_to_end_<dataset>")
    p.add_argument("--out", help="markdown report (default: benchmarks/results/end_to_end_<dataset>.md)")
    p.add_argument("--plot", help="default: docs/end_to_end_<dataset>.png")
    p.add_argument("--note", default="", help="what was cut to fit the machine (goes into the report)")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from results.jsonl")
    args = p.parse_args(argv)
    if args.width not in ("auto", "baseline") and not args.width.isdigit():
        p.error(f"--width must be auto, baseline or a number, got {args.width!r}")
    tag = args.dataset if args.dataset != "imagefolder" else Path(args.data_dir or "imagefolder").name
    tag += "" if args.metric == "params" else f"_{args.metric}"
    args.runs_dir = Path(args.runs_dir or f"runs/end_to_end_{tag}")
    args.out = Path(args.out or f"benchmarks/results/end_to_end_{tag}.md")
    args.plot = Path(args.plot or f"docs/end_to_end_{tag}.png")
    return args


def deployed(genotype: Any, setting: EvalSetting, metric: str) -> int:
    """Parameters, or peak activation bytes of one fp32 inference, of `genotype` deployed in `setting`."""
    if metric == "memory":
        return 4 * genotype_peak_elements(genotype, setting)
    return network_cost(genotype, setting).params


def narrowest_fit(setting: EvalSetting, budget: float, genotype: str = BASELINE,
                  metric: str = "params") -> tuple[int, int]:
    """The widest even channel count whose `genotype` network is within `budget` of `metric`, and its cost."""
    best = None
    for channels in range(4, 256, 2):
        cost = deployed(GENOTYPES.get(genotype), setting.replace(channels=channels), metric)
        if cost > budget:
            break
        best = (channels, cost)
    if best is None:
        raise SystemExit(f"{genotype} does not fit {budget:,.0f} ({metric}) even at 4 channels")
    return best


def train_cost(train: dict[str, Any], metric: str) -> int:
    """The trained network's cost in `metric` (memory counted from its genotype and setting)."""
    if metric == "params":
        return train["params"]
    return deployed(load_genotype(train["genotype"]), EvalSetting(**train["setting"]), metric)


def searched_width(args: argparse.Namespace, setting: EvalSetting, budget: str) -> str:
    """`--channels` of the DCA-NAS search: auto, the baseline's width, or a given number."""
    if args.width == "baseline":
        return str(narrowest_fit(setting, parse_count(budget), metric=args.metric)[0])
    return args.width


def run_dcanas_method(args: argparse.Namespace, setting: EvalSetting, budget: str, seed: int) -> dict[str, Any]:
    """Search under the budget, then train the found genotype."""
    folder = args.runs_dir / f"dcanas_{budget}_s{seed}"
    search_argv = ["search", *data_argv(args), f"--max-{args.metric}", budget, "--cells", str(args.cells),
                   "--channels", searched_width(args, setting, budget), "--epochs", str(args.search_epochs), "--batch-size",
                   str(args.search_batch), "--seed", str(seed), "--device", args.device,
                   "--run-dir", str(folder / "search")]
    search_argv += ["--max-steps", str(args.search_steps)] if args.search_steps else []
    search_argv += ["--arch-lr", str(args.arch_lr)] if args.arch_lr else []
    search_argv += ["--warmup-epochs", str(args.search_warmup)] if args.search_warmup else []
    search_argv += ["--max-skips", str(args.max_skips)] if args.max_skips is not None else []
    search_argv += ["--search-cells", str(args.search_cells)] if args.search_cells else []
    search_argv += ["--reduce-cell", args.reduce_cell] if args.reduce_cell else []
    if (folder / "search" / "checkpoint.pt").is_file() and not (folder / "search" / "result.json").is_file():
        # an interrupted study: continue the search exactly; its time is the search loop's, both parts together
        search = run_dcanas(["search", "--resume", str(folder / "search")], folder / "search_resumed.log")
        search.update(wall_seconds=round(search["search_seconds"], 1), resumed=True)
    else:
        search = run_dcanas(search_argv, folder / "search.log")
    train = run_dcanas(["train", str(folder / "search"), *train_argv(args, seed), "--run-dir", str(folder / "train")],
                       folder / "train.log")
    return {"search": search, "train": train}


def run_baseline(args: argparse.Namespace, setting: EvalSetting, budget: str, seed: int) -> dict[str, Any]:
    """Train DARTS_V2 at the widest width that fits the budget."""
    channels, _ = narrowest_fit(setting, parse_count(budget), metric=args.metric)
    folder = args.runs_dir / f"darts_v2_{budget}_s{seed}"
    train = run_dcanas(["train", BASELINE, *data_argv(args), "--cells", str(args.cells), "--channels", str(channels),
                        *train_argv(args, seed), "--run-dir", str(folder / "train")], folder / "train.log")
    return {"search": None, "train": train}


def random_cell_in_band(setting: EvalSetting, budget: float, seed: int, metric: str = "params") -> tuple[Any, int]:
    """The library's random cell in the 85-100 % band (`dcanas random-cell`), confirmed by the network's own count."""
    # the cost table screens each draw exactly and fast; the network built once confirms the cell drawn
    table = build_cost_table(setting, memory_dtype="float32" if metric == "memory" else None)
    budgets = [Budget(metric, budget)]  # METRICS are the cost table's own metric names
    try:
        genotype, draws = random_in_band(table, budgets, seed, LANDING_BAND)
    except BudgetError as exc:
        raise SystemExit(str(exc)) from None
    cost = deployed(genotype, setting, metric)
    assert in_band({metric: cost}, budgets, LANDING_BAND), f"cost table and network disagree: {cost}"
    return genotype, draws


def run_random_cell(args: argparse.Namespace, setting: EvalSetting, budget: str, seed: int) -> dict[str, Any]:
    """Train a random cell landed in the budget band at the width the search would use."""
    width = searched_width(args, setting, budget)
    if width == "auto":
        width = str(narrowest_fit(setting, parse_count(budget), metric=args.metric)[0])
    genotype, draws = random_cell_in_band(setting.replace(channels=int(width)), parse_count(budget), seed, args.metric)
    folder = args.runs_dir / f"random_{budget}_s{seed}"
    train = run_dcanas(["train", genotype_to_text(genotype), *data_argv(args), "--cells", str(args.cells),
                        "--channels", width, *train_argv(args, seed), "--run-dir", str(folder / "train")],
                       folder / "train.log")
    return {"search": None, "train": train, "random_draws": draws}


def run_study(args: argparse.Namespace) -> None:
    """Run every (method, budget, seed) not yet in results.jsonl, `--jobs` at a time."""
    results_path = args.runs_dir / "results.jsonl"
    done = {(r["method"], r["budget"], r["seed"]) for r in load_results(results_path)}
    config = SearchConfig(dataset=args.dataset, data_dir=args.data_dir, eval_cells=args.cells, image_size=args.image_size)
    setting = EvalSetting(**dry_run(config)["setting"])  # the deployed network's input, classes, depth
    lock = threading.Lock()

    def task(method: str, budget: str, seed: int) -> None:
        print(f"start  {method} {budget} seed {seed}", flush=True)
        run = {METHODS[0]: run_dcanas_method, METHODS[1]: run_baseline, METHODS[2]: run_random_cell}[method](
            args, setting, budget, seed)
        row = {"method": method, "budget": budget, "seed": seed, **run}
        with lock, open(results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        acc = run["train"]["test_acc"]
        print(f"done   {method} {budget} seed {seed}: test {100 * acc:.2f}%, {run['train']['params']:,} params",
              flush=True)

    # the largest budgets first, so the slowest jobs do not end up alone at the end
    todo = [(m, b, s) for b in sorted(args.budgets, key=parse_count, reverse=True) for s in args.seeds
            for m in args.methods if (m, b, s) not in done]
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(task, *t) for t in todo]:
            future.result()




def summary(rows: list[dict[str, Any]], budgets: list[str], metric: str = "params") -> list[dict[str, Any]]:
    """One line per (budget, method): sizes, accuracy over seeds, times."""
    lines = []
    for budget in sorted(budgets, key=parse_count):
        for method in METHODS:
            runs = [r for r in rows if r["budget"] == budget and r["method"] == method]
            if not runs:
                continue
            train = [r["train"] for r in runs]
            search = [r["search"]["wall_seconds"] for r in runs if r["search"]]
            lines.append({
                "budget": budget, "method": method, "width": "/".join(sorted({str(t["setting"]["channels"]) for t in train})),
                "params": max(t["params"] for t in train), "flops": max(t["flops"] for t in train),
                "cost": [train_cost(t, metric) for t in train],
                "accs": [t["test_acc"] for t in train],
                "within": all(train_cost(t, metric) <= parse_count(budget) for t in train),
                "search_s": statistics.mean(search) if search else None,
                "train_s": statistics.mean(t["wall_seconds"] for t in train)})
    return lines


def plot(lines: list[dict[str, Any]], path: Path, title: str, metric: str = "params") -> None:
    """Test accuracy vs the deployed cost, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, marker in zip(METHODS, "os^"):
        own = [x for x in lines if x["method"] == method]
        means = [100 * statistics.mean(x["accs"]) for x in own]
        sds = [100 * statistics.stdev(x["accs"]) if len(x["accs"]) > 1 else 0 for x in own]
        ax.errorbar([max(x["cost"]) / 1e6 for x in own], means, yerr=sds, marker=marker, capsize=3, label=method)
    for budget in sorted({x["budget"] for x in lines}, key=parse_count):
        ax.axvline(parse_count(budget) / 1e6, color="grey", lw=0.6, ls=":")
    unit = "parameters (M" if metric == "params" else "peak activation memory (MB, fp32"
    ax.set(xlabel=f"deployed {unit}; dotted: budgets)", ylabel="test accuracy (%)", title=title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]], command: str) -> None:
    """Markdown: summary table, every run, the command, the machine and what was cut."""
    lines = summary(rows, sorted({r["budget"] for r in rows}, key=parse_count), args.metric)
    shown = [m for m in METHODS if any(x["method"] == m for x in lines)]
    plot(lines, args.plot, f"{args.dataset}: " + " vs ".join(shown), args.metric)
    what = "parameter budget" if args.metric == "params" else "peak activation memory budget (bytes, fp32, batch 1)"
    out = [f"# End to end on {args.dataset}: DCA-NAS vs {BASELINE} narrowed to the same {what}", "",
           f"Deployed networks: {args.cells} cells (CIFAR-style)"
           + (f", images resized to {args.image_size}x{args.image_size}" if args.image_size else "")
           + f". Search: {args.search_epochs} epochs"
           + (f", stopped after {args.search_steps} steps" if args.search_steps else "")
           + f", batch {args.search_batch}" + (f", alpha lr {args.arch_lr}" if args.arch_lr else "")
           + (f", weights-only warm-up {args.search_warmup:g} epoch" if args.search_warmup else "")
           + (f", at most {args.max_skips} skip connections per normal cell" if args.max_skips is not None else "")
           + (f", {args.search_cells}-cell supernet" if args.search_cells else "")
           + (f", reduction cell fixed to {args.reduce_cell}'s" if args.reduce_cell else "")
           + ("" if args.width == "auto" else f", width {args.width}")
           + f". Training (both methods): {args.train_epochs} epochs"
           + (f" over a class-balanced subset of {args.train_subset} training images" if args.train_subset else "")
           + f", batch {args.train_batch}, lr {args.lr} cosine, cutout {args.cutout}, drop-path {args.drop_path}; "
           "test accuracy on the full test set, last epoch.", ""]
    if args.note:
        out += [f"**What was cut:** {args.note}", ""]
    cost_head = "" if args.metric == "params" else " peak bytes (min..max) |"
    out += [f"| budget | method | width | params |{cost_head} FLOPs (MACs) | within | test % mean ± sd (n) | search s | "
            "train s |", "|---|---|---|---|---|---|---|---|---|" + ("---|" if cost_head else "")]
    for x in lines:
        cost = "" if args.metric == "params" else f" {min(x['cost']):,}..{max(x['cost']):,} |"
        out.append(f"| {x['budget']} | {x['method']} | {x['width']} | {x['params']:,} |{cost} {x['flops'] / 1e6:.1f}M | "
                   f"{'yes' if x['within'] else 'NO'} | {mean_sd(x['accs'], scale=100, count=True)} | "
                   f"{'-' if x['search_s'] is None else round(x['search_s'])} | {x['train_s']:.0f} |")
    out += ["", f"![accuracy vs {args.metric}]({os.path.relpath(args.plot, args.out.parent)})", "", "## Every run", "",
            "| budget | method | seed | genotype | params | test % | search s | train s | peak MiB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (parse_count(r["budget"]), r["method"], r["seed"])):
        t, s = r["train"], r["search"]
        peak = max(t["peak_mib"], s["peak_mib"] if s else 0)
        out.append(f"| {r['budget']} | {r['method']} | {r['seed']} | `{t['genotype']}` | {t['params']:,} | "
                   f"{100 * t['test_acc']:.2f} | {s['wall_seconds'] if s else '-'} | {t['wall_seconds']} | {peak} |")
    out += ["", "Command:", "", "```", command, "```", "", f"Machine: {machine()}.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(out))
    print("\n".join(out[: out.index("## Every run")]))


def main(argv: list[str] | None = None) -> int:
    """Run (or continue) the study, then write the report and plot."""
    args = parse_args(argv)
    if args.as_cifar10:
        args.dataset, args.data_dir = "cifar10", str(cifar10_batches(args.data_dir, Path(args.as_cifar10)))
    command = study_command("benchmarks/end_to_end.py", sys.argv[1:] if argv is None else argv)
    if not args.report_only:
        run_study(args)
    rows = load_results(args.runs_dir / "results.jsonl")
    if not rows:
        raise SystemExit(f"no results in {args.runs_dir / 'results.jsonl'}")
    write_report(args, rows, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
