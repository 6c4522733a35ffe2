"""Search quality on NAS-Bench-201's ground truth: seeds x budgets x remedies, against the table's best.

    # this machine (2 CPU cores): the `cpu` protocol, every remedy, 3 seeds, two searches at a time
    python benchmarks/search_quality.py --protocol cpu --methods beta-decay none dirichlet pc-darts --seeds 0 1 2 --jobs 2
    # a GPU: the paper's protocol (50 epochs, full CIFAR-10, the benchmark's N=5 supernet)
    python benchmarks/search_quality.py --protocol paper --remedies beta-decay --seeds 0 1 2

Every search runs `dcanas search --space nb201` (in-process, one torch thread, the dataset decoded once
per worker) under one budget: none; Pixel 3 and Raspberry Pi 4 measured latency at three levels each
(about the 10th, 25th and 50th percentile of the none-free architectures); two parameter budgets.
Every found architecture is then looked up in the benchmark table (test accuracy after 200 epochs on
CIFAR-10, CIFAR-100, ImageNet16-120; measured latency) and compared with the best architecture the
table holds inside the same budget (architectures without `none` edges: what a search can derive).

Results are appended to RUNS_DIR/results.jsonl as each search ends (an interrupted sweep continues
where it stopped); the full record goes to benchmarks/results/search_quality.json, the summary (mean
± sd per remedy and budget) to benchmarks/results/search_quality.md, the plot to docs/search_quality.png.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from common import (DEVICE_NAMES, append_result, bench_truth, best_in_budget, budget_label, final_weights,
                    load_results, mean_sd)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10_jpg.tar.gz"
DEFAULT_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"

# The two protocols. `cpu` fits a 2-core machine: a 1-cell-per-stage supernet on 16x16 images (the
# budgets stay about the deployed 32x32 network), 10,000 training images (5,000 for weights, 5,000 for
# alphas), 4 epochs of 78 steps. `paper` is the paper's NB201 search (50 epochs, all 50,000 images).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "cpu": {"epochs": 4, "batch_size": 64, "cells": 3, "channels": 16, "train_subset": 10_000,
            "search_image_size": 16, "arch_lr": 3e-3, "device": "cpu"},
    "paper": {"epochs": 50, "batch_size": 64, "cells": 15, "channels": 16, "train_subset": None,
              "search_image_size": None, "arch_lr": 3e-4, "device": "auto"},
}
# What each compared method changes in the search (on top of the protocol). The remedies run under
# every budget; PC-DARTS (partial channels K=4 + edge normalisation on its own plain supernet, warm-up
# as its paper: 15 of 50 epochs, here 1 of 4) has no budget, so it runs unconstrained only and its
# architectures are placed on each device's latency axis: the paper's Figure 3 comparison.
# Each names its random smoothing (alpha_noise) so that a change of the space's default leaves them as measured.
METHODS: dict[str, dict[str, Any]] = {
    "beta-decay+rs": {"remedy": "beta-decay", "alpha_noise": 0.3},  # + SDARTS random smoothing
    "beta-decay": {"remedy": "beta-decay", "alpha_noise": 0.0},
    "dirichlet": {"remedy": "dirichlet", "alpha_noise": 0.0},
    "none": {"remedy": "none", "alpha_noise": 0.0},
    "pc-darts": {"remedy": "none", "alpha_noise": 0.0, "bottleneck": 1, "weight_sharing": False,
                 "derived_cells": False, "partial_channels": 4, "edge_norm": True, "warmup_epochs": 1},
}
UNCONSTRAINED_ONLY = {"pc-darts"}
LATENCY_BUDGETS = {"pixel3": [6.6, 10.4, 13.9], "raspi4": [16.3, 25.6, 34.5]}  # ms
PARAMS_BUDGETS = [400_000, 700_000]
# CIFAR-10 test accuracy on NAS-Bench-201 as each method's paper reports it (mean over its seeds)
PUBLISHED = {"DARTS (1st order)": 54.30, "GDAS": 93.61, "PC-DARTS": 93.41, "DrNAS": 94.36, "beta-DARTS": 94.36,
             "optimum": 94.37}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="cpu")
    p.add_argument("--methods", "--remedies", nargs="+", default=["beta-decay"], choices=list(METHODS),
                   dest="remedies", help="remedies (remedies.py) and baselines to compare")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", default=["all"],
                   help="subset of: none pixel3 raspi4 params (default all)")
    p.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE",
                   help="override a search setting for every run (e.g. beta_weight=2)")
    p.add_argument("--tag", default="", help="a suffix that tells these runs apart from others with the same remedy")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="CIFAR-10 (python batches, or the JPEG tarball)")
    p.add_argument("--dataset", help="cifar10 or imagefolder (default: by --data-dir)")
    p.add_argument("--table", default=str(DEFAULT_TABLE), help="the NB201 CSV")
    p.add_argument("--jobs", type=int, default=1, help="searches at a time (one torch thread each)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "search_quality"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search_quality.json"))
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "results" / "search_quality.md"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "search_quality.png"))
    p.add_argument("--report-only", action="store_true",
                   help="rebuild json, report and plot from results.jsonl (and --consensus records from --out)")
    p.add_argument("--consensus", type=int, metavar="K",
                   help="also report `--repeats K` consensus: each method's and budget's seeds in disjoint groups of "
                        "K (K=1: every search landed again by the current code, e.g. after a change of repair/fill)")
    args = p.parse_args(argv)
    if args.dataset is None:
        args.dataset = "imagefolder" if args.data_dir.endswith((".tar", ".tar.gz", ".tgz")) else "cifar10"
    args.settings = dict(PROTOCOLS[args.protocol])
    args.extra_settings = {}  # --extra: over the protocol and over each method's own settings
    for spec in args.extra:
        key, _, value = spec.partition("=")
        args.extra_settings[key] = json.loads(value) if value not in ("", None) else None
    args.settings.update(args.extra_settings)
    return args


# -- the plan ---------------------------------------------------------------------------------------------------

def planned_budgets(which: list[str]) -> list[dict[str, Any] | None]:
    """The budgets of the sweep, in the results' format (None = unconstrained)."""
    every = "all" in which
    plan: list[dict[str, Any] | None] = [None] if every or "none" in which else []
    for device, limits in LATENCY_BUDGETS.items():
        if every or device in which:
            plan += [{"metric": "latency", "device": device, "limit": v} for v in limits]
    if every or "params" in which:
        plan += [{"metric": "params", "device": None, "limit": v} for v in PARAMS_BUDGETS]
    return plan


def planned_runs(args: argparse.Namespace) -> list[tuple[str, dict[str, Any] | None, int]]:
    """(method, budget, seed) of every search of the sweep."""
    budgets = planned_budgets(args.budgets)
    return [(m, b, seed) for m in args.remedies for seed in args.seeds for b in budgets
            if b is None or m not in UNCONSTRAINED_ONLY]


def run_name(remedy: str, tag: str, budget: dict[str, Any] | None, seed: int) -> str:
    what = "unconstrained" if budget is None else f"{budget['device'] or budget['metric']}-{budget['limit']:g}"
    return f"{remedy}{tag and '-' + tag}/{what}-seed{seed}"


# -- one search -------------------------------------------------------------------------------------------------

def run_one(args: argparse.Namespace, remedy: str, budget: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """One search, looked up in the benchmark table."""
    from dcanas.lug import run_task
    from dcanas.search_config import SearchConfig

    s = args.settings
    limits = {"max_latency": None, "max_params": None, "latency_device": None}
    if budget is not None and budget["metric"] == "latency":
        limits.update(max_latency=budget["limit"], latency_device=budget["device"])
    elif budget is not None:
        limits["max_params"] = budget["limit"]
    known = {k: v for k, v in {**s, **METHODS[remedy], **args.extra_settings}.items()
             if k in SearchConfig.__dataclass_fields__}
    config = SearchConfig(space="nb201", dataset=args.dataset, data_dir=args.data_dir, bench_table=args.table,
                          seed=seed, threads=1, **limits, **known)
    name = run_name(remedy, args.tag, budget, seed)
    t0 = time.perf_counter()
    if budget is not None and config.budget_scope == "landing":
        return looked_up(args, remedy, budget, seed, landed_unconstrained(args, remedy, seed, config),
                         time.perf_counter() - t0, name)
    # fresh, resumed from its checkpoint, or read back when it finished before (an interrupted sweep)
    result = run_task({"config": config.to_dict(), "run_dir": str(Path(args.runs_dir) / name), "threads": 1})["result"]
    return looked_up(args, remedy, budget, seed, result, time.perf_counter() - t0, name)


def landed_unconstrained(args: argparse.Namespace, remedy: str, seed: int, config: Any) -> dict[str, Any]:
    """--budget-scope landing: the search has no budget term, so the unconstrained search of the same seed is
    this budget's search too (tests/test_nb201_search.py checks that they are identical); land its final
    mixing weights in the budget with the library's landing, as `dcanas search --budget-scope landing` does."""
    from dcanas.repeats import consensus_search
    from dcanas.search_loop import prepare_search

    searched = Path(args.runs_dir) / run_name(remedy, args.tag, None, seed)
    base = json.loads((searched / "result.json").read_text())  # recorded with its final mixing weights
    return consensus_search(config, [base["mixing_weights"]], prepare_search(config), searched,
                            base["search_seconds"], base["steps"]).to_dict()


def looked_up(args: argparse.Namespace, remedy: str, budget: dict[str, Any] | None, seed: int,
              result: dict[str, Any], wall: float, name: str) -> dict[str, Any]:
    """A search's result as a record of the issue's format: its architecture looked up in the table."""
    bench, params, _ = bench_truth(args.table)
    row = bench.row(result["genotype"])
    if budget is None:
        cost = None
    elif budget["metric"] == "params":
        cost = float(params[row])
    else:
        cost = float(bench.latency[budget["device"]][row])
    best = best_in_budget(budget, args.table)
    acc = {d: float(v[row]) for d, v in bench.accuracy.items()}
    return {"space": "nb201", "remedy": remedy, "tag": args.tag, "seed": seed, "budget": budget,
            "arch": result["genotype"], "raw_arch": result["raw_genotype"], "index": int(bench.indices[row]),
            "cost": cost, "test_acc_cifar10": acc["cifar10"], "test_acc_cifar100": acc["cifar100"],
            "test_acc_imagenet16": acc["imagenet16-120"], "best_in_budget": best,
            "regret": best - acc["cifar10"], "budget_use": None if budget is None else cost / budget["limit"],
            "repaired": bool(result["repairs"]), "search_s": result["search_seconds"], "wall_s": round(wall, 1),
            "steps": result["steps"], "latency_ms": {d: float(bench.latency[d][row]) for d in DEVICE_NAMES},
            "params": float(params[row]), "name": name, **alphas_own_landing(bench, result)}


def alphas_own_landing(bench: Any, result: dict[str, Any]) -> dict[str, Any]:
    """With --rerank: what the alphas alone (--rerank none) would have landed, and its true accuracy."""
    if not result.get("rerank"):
        return {}
    # older records lack it: their first candidate was the same landing until the budget voter widened the list
    arch = result["rerank"].get("without_rerank") or result["rerank"]["candidates"][0]["genotype"]
    return {"rerank": result["rerank"]["proxy"], "alpha_arch": arch,
            "alpha_acc_cifar10": float(bench.accuracy["cifar10"][bench.row(arch)])}


def consensus_runs(args: argparse.Namespace, runs: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """`dcanas search --repeats K` (consensus) replayed on the sweep's own searches: per method and budget, the
    seeds in disjoint groups of K (seed order), their final mixing weights averaged, derived and landed by the
    library's `consensus_search`, and looked up like one search; --jobs groups at a time."""
    from tqdm.auto import tqdm

    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["remedy"], json.dumps(r["budget"], sort_keys=True)), []).append(r)
    tasks = []
    for (remedy, key), members in groups.items():
        members.sort(key=lambda r: r["seed"])
        tasks += [(remedy, key, members[g * k:(g + 1) * k]) for g in range(len(members) // k)]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), initializer=_cached_datasets) as pool:
        return list(tqdm(pool.map(functools.partial(consensus_one, args), tasks), total=len(tasks),
                         desc="landings", dynamic_ncols=True))


def consensus_one(args: argparse.Namespace, task: tuple[str, str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One group of `consensus_runs`: (method, budget key, its searches' records) -> the consensus' record."""
    from dcanas.repeats import consensus_search
    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import prepare_search

    remedy, key, group = task
    dirs = [Path(args.runs_dir) / r["name"] for r in group]
    # as the searches ran, with this sweep's --extra on top: how a landing option (e.g. --rerank) is
    # replayed on searches recorded without it
    config = SearchConfig.from_dict({**json.loads((dirs[0] / "config.json").read_text()), **args.extra_settings})
    result = consensus_search(config, [final_weights(d) for d in dirs], prepare_search(config), dirs[0],
                              sum(r["search_s"] for r in group), sum(r["steps"] for r in group))
    seeds = [r["seed"] for r in group]
    record = looked_up(args, remedy, json.loads(key), seeds[0], result.to_dict(), sum(r["wall_s"] for r in group),
                       group[0]["name"].replace(f"seed{seeds[0]}", "consensus-" + "-".join(map(str, seeds))))
    return {**record, "consensus_of": seeds, "members_acc_cifar10": [r["test_acc_cifar10"] for r in group]}


def _cached_datasets() -> None:
    """Decode the dataset once per worker process, not once per search."""
    from dcanas import search_loop

    search_loop.load_dataset = functools.lru_cache(maxsize=2)(search_loop.load_dataset)


def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run every planned search not already in results.jsonl; return all of them."""
    from tqdm.auto import tqdm

    path = Path(args.runs_dir) / "results.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["name"]: r for r in load_results(path)}
    plan = planned_runs(args)
    landing = args.settings.get("budget_scope") == "landing"
    if landing:  # each seed's one search first; every budget lands it
        searches = sorted({(m, s) for m, _, s in plan})
        plan = [(m, None, s) for m, s in searches] + [t for t in plan if t[1] is not None]
    todo = [t for t in plan if run_name(t[0], args.tag, t[1], t[2]) not in done]
    phases = [[t for t in todo if t[1] is None], [t for t in todo if t[1] is not None]] if landing else [todo]
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="searches", dynamic_ncols=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), initializer=_cached_datasets) as pool:
        for phase in phases:
            _run_phase(pool, args, phase, path, done, bar)
    bar.close()
    wanted = {run_name(r, args.tag, b, s) for r, b, s in plan}
    return [done[n] for n in sorted(done) if n in wanted]


def _run_phase(pool: ProcessPoolExecutor, args: argparse.Namespace, todo: list, path: Path,
               done: dict[str, dict[str, Any]], bar: Any) -> None:
    """Run `todo`'s searches on the pool, recording each as it ends."""
    futures = [pool.submit(run_one, args, *t) for t in todo]
    for future in as_completed(futures):
        try:
            record = future.result()
        except Exception as exc:  # noqa: BLE001 - one failed search must not stop the sweep; rerun to retry
            bar.write(f"a search failed: {type(exc).__name__}: {exc}")
            continue
        append_result(path, record)
        done[record["name"]] = record
        bar.update(1)
        bar.write(f"{record['name']}: {record['arch']} CIFAR-10 {record['test_acc_cifar10']:.2f} "
                  f"(best in budget {record['best_in_budget']:.2f}), {record['search_s']:.0f} s")


def use_text(run: dict[str, Any]) -> str:
    return "-" if run["budget_use"] is None else f"{run['budget_use']:.2f}"


def summary_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Per remedy and budget: accuracy, regret, within-budget, budget use, repairs (mean ± sd over seeds)."""
    lines = ["| remedy | budget | seeds | CIFAR-10 test % | min | regret (pts) | within | use 85-100 % | "
             "budget use | repaired | search s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["remedy"] + (f" ({r['tag']})" if r.get("tag") else ""),
                           json.dumps(r["budget"], sort_keys=True)), []).append(r)
    for (remedy, key), rs in groups.items():
        budget = json.loads(key)
        acc = [r["test_acc_cifar10"] for r in rs]
        use = [r["budget_use"] for r in rs if r["budget_use"] is not None]
        within = "-" if budget is None else f"{sum(u <= 1 + 1e-9 for u in use)}/{len(rs)}"
        landed = "-" if budget is None else f"{sum(0.85 <= u <= 1 + 1e-9 for u in use)}/{len(rs)}"
        lines.append(f"| {remedy} | {budget_label(budget)} | {len(rs)} | {mean_sd(acc)} | {min(acc):.2f} | "
                     f"{mean_sd([r['regret'] for r in rs])} | {within} | {landed} | "
                     f"{mean_sd(use) if use else '-'} | {sum(r['repaired'] for r in rs)}/{len(rs)} | "
                     f"{statistics.mean(r['search_s'] for r in rs):.0f} |")
    return lines


def totals_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Per remedy, over all budgets: the targets of the search-quality issue."""
    lines = ["| remedy | runs | unconstrained CIFAR-10 % | constrained: mean regret | seeds < 90 % | within budget | "
             "use 85-100 % | repaired |", "|---|---|---|---|---|---|---|---|"]
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(r["remedy"] + (f" ({r['tag']})" if r.get("tag") else ""), []).append(r)
    for remedy, rs in by.items():
        free = [r["test_acc_cifar10"] for r in rs if r["budget"] is None]
        con = [r for r in rs if r["budget"] is not None]
        n = max(len(con), 1)
        lines.append(f"| {remedy} | {len(rs)} | {mean_sd(free)} | {mean_sd([r['regret'] for r in con])} | "
                     f"{sum(r['test_acc_cifar10'] < 90 for r in rs)} | "
                     f"{sum(r['budget_use'] <= 1 + 1e-9 for r in con)}/{len(con)} | "
                     f"{100 * sum(0.85 <= r['budget_use'] <= 1 + 1e-9 for r in con) / n:.0f} % | "
                     f"{100 * sum(r['repaired'] for r in con) / n:.0f} % |")
    return lines


def consensus_section(consensus: list[dict[str, Any]]) -> list[str]:
    """The report's lines on --repeats consensus (none without --consensus)."""
    if not consensus:
        return []
    k = len(consensus[0]["consensus_of"])
    title = (f"## Consensus of {k} searches (`--repeats {k}`, disjoint groups of seeds)" if k > 1 else
             "## Each search landed again by the current code (`--consensus 1`: its final weights derived, "
             "repaired and filled anew)")
    return [title, "",
            *totals_lines(consensus), "", *summary_lines(consensus), "",
            "| remedy | budget | seeds | arch | CIFAR-10 % | its searches alone % |", "|---|---|---|---|---|---|",
            *(f"| {r['remedy']} | {budget_label(r['budget'])} | {', '.join(map(str, r['consensus_of']))} | "
              f"`{r['arch']}` | {r['test_acc_cifar10']:.2f} | "
              f"{', '.join(f'{a:.2f}' for a in r['members_acc_cifar10'])} |" for r in consensus), ""]


def rerank_section(runs: list[dict[str, Any]], which: str = "the same searches") -> list[str]:
    """The report's lines on --rerank: each search's landing against what its alphas alone landed (none
    without reranked runs)."""
    rs = [r for r in runs if "alpha_acc_cifar10" in r]
    if not rs:
        return []
    lines = [f"## The rerank against the alphas alone ({which})", "",
             "| landing | runs | unconstrained CIFAR-10 % (min) | constrained: mean regret | runs < 90 % |",
             "|---|---|---|---|---|"]
    for label, acc in ((f"--rerank {rs[0]['rerank']}", "test_acc_cifar10"), ("the alphas alone (--rerank none)",
                                                                            "alpha_acc_cifar10")):
        free = [r[acc] for r in rs if r["budget"] is None]
        con = [r for r in rs if r["budget"] is not None]
        lowest = f" ({min(free):.2f})" if free else ""
        lines.append(f"| {label} | {len(rs)} | {mean_sd(free)}{lowest} | "
                     f"{mean_sd([r['best_in_budget'] - r[acc] for r in con])} | {sum(r[acc] < 90 for r in rs)} |")
    diff = [r["test_acc_cifar10"] - r["alpha_acc_cifar10"] for r in rs]
    return lines + ["", f"Run by run the rerank was higher in {sum(d > 1e-9 for d in diff)}, lower in "
                        f"{sum(d < -1e-9 for d in diff)} and equal in {sum(abs(d) <= 1e-9 for d in diff)}.", ""]


def plot(runs: list[dict[str, Any]], table_path: str, path: Path) -> None:
    """Accuracy vs measured latency (Pixel 3, Raspberry Pi 4): the table's Pareto front and every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench, _, none_free = bench_truth(table_path)
    acc = bench.accuracy["cifar10"]
    remedies = sorted({r["remedy"] + (f" ({r['tag']})" if r.get("tag") else "") for r in runs})
    markers = dict(zip(remedies, "osD^vP*X"))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, device in zip(axes, DEVICE_NAMES):
        lat = bench.latency[device]
        ax.scatter(lat[none_free], acc[none_free], s=3, c="lightgrey", label="NB201 (none-free)")
        order = np.lexsort((-acc[none_free], lat[none_free]))
        front_l, front_a, best = [], [], -np.inf
        for k in order:
            if acc[none_free][k] > best:
                best = acc[none_free][k]
                front_l.append(lat[none_free][k])
                front_a.append(best)
        ax.step(front_l, front_a, where="post", c="black", lw=1, label="Pareto front")
        for limit in LATENCY_BUDGETS[device]:
            ax.axvline(limit, c="tab:red", ls=":", lw=0.8)
        for i, remedy in enumerate(remedies):
            rs = [r for r in runs if r["remedy"] + (f" ({r['tag']})" if r.get("tag") else "") == remedy
                  and (r["budget"] is None or r["budget"].get("device") == device)]
            ax.scatter([r["latency_ms"][device] for r in rs], [r["test_acc_cifar10"] for r in rs],
                       marker=markers[remedy], s=28, c=f"C{i}", edgecolors="black", linewidths=0.4, label=remedy)
        ax.set_xlabel(f"measured latency on {DEVICE_NAMES[device]} (ms)")
        ax.set_ylabel("CIFAR-10 test accuracy (%)")
        ax.set_ylim(max(50.0, min([r["test_acc_cifar10"] for r in runs] + [85.0]) - 2), 95)
        ax.set_title(f"{DEVICE_NAMES[device]} budgets (dotted) and unconstrained runs")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(args: argparse.Namespace, runs: list[dict[str, Any]], command: str,
                  consensus: list[dict[str, Any]] = ()) -> str:
    """search_quality.json (the issue's format), the markdown report, the plot; returns the report."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"protocol": args.protocol, "settings": args.settings, "command": command,
                               "runs": runs, **({"consensus": list(consensus)} if consensus else {})},
                              indent=1) + "\n")
    plot(runs, args.table, Path(args.plot))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    published = ", ".join(f"{k} {v:.2f}" for k, v in PUBLISHED.items())
    text = "\n".join([
        f"# Search quality on NAS-Bench-201 (`{args.protocol}` protocol)", "",
        f"```\n{command}\n```", "",
        f"Settings: {json.dumps(args.settings)}. Machine: {machine}.", "",
        "## Against the issue's targets", "", *totals_lines(runs), "",
        f"Published CIFAR-10 test accuracy on NB201 (their papers): {published}.", "",
        "## Per budget (mean ± sd over seeds)", "", *summary_lines(runs), "",
        "Regret = best CIFAR-10 test accuracy among none-free architectures inside the budget − the found one's. "
        "Budget use = true cost / budget (measured latency, exact parameters).", "",
        f"![accuracy vs latency]({os.path.relpath(args.plot, Path(args.report).parent)})", "",
        *rerank_section(runs), *rerank_section(list(consensus), "the landings below"), *consensus_section(consensus),
        "## Every run", "",
        "| remedy | budget | seed | arch (index) | CIFAR-10 / 100 / IN16 % | best in budget | use | repaired | s |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['remedy']}{' (' + r['tag'] + ')' if r.get('tag') else ''} | {budget_label(r['budget'])} | "
          f"{r['seed']} | `{r['arch']}` ({r['index']}) | {r['test_acc_cifar10']:.2f} / {r['test_acc_cifar100']:.2f} / "
          f"{r['test_acc_imagenet16']:.2f} | {r['best_in_budget']:.2f} | "
          f"{use_text(r)} | "
          f"{'yes' if r['repaired'] else 'no'} | {r['search_s']:.0f} |" for r in runs)])
    Path(args.report).write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/search_quality.py " + shlex.join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only")
    if args.report_only:
        path = Path(args.runs_dir) / "results.jsonl"
        plan = {run_name(r, args.tag, b, s) for r, b, s in planned_runs(args)}
        runs = [r for r in load_results(path) if r["name"] in plan]
    else:
        runs = sweep(args)
    consensus = []
    if args.consensus and args.report_only and Path(args.out).is_file():  # landed before: the records it wrote
        consensus = [r for r in json.loads(Path(args.out).read_text()).get("consensus", [])
                     if len(r["consensus_of"]) == args.consensus]
    if args.consensus and not consensus:
        consensus = consensus_runs(args, runs, args.consensus)
    print(write_outputs(args, runs, command, consensus))
    return 0


if __name__ == "__main__":
    sys.exit(main())
