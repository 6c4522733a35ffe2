"""DCA-NAS on NAS-Bench-201 for Pixel 3 and Raspberry Pi 4: true accuracy vs true latency.

For each device and each latency budget, a DCA-NAS search (`--space nb201 --max-latency B
--latency-device D`) on CIFAR-10; and, per seed, the same search without any constraint
(PC-DARTS/DARTS style; its architecture does not depend on the device, so one run serves both).
Every found architecture is then looked up in the benchmark table: its CIFAR-10 test accuracy
after the benchmark's 200-epoch training, and its measured latency on each device. The plot puts
them on the benchmark's own Pareto front (accuracy vs latency over all 15,625 architectures).

    # smoke test (minutes on a CPU): two search steps per run, one seed
    python benchmarks/nb201_latency.py --max-steps 2 --seeds 0
    # the CPU run of the report (see benchmarks/results/nb201_latency.md for what it cut)
    python benchmarks/nb201_latency.py --epochs 1 --seeds 0
    # the full experiment on a GPU: 50 epochs, batch 256, the benchmark's N=5 supernet, 3 seeds
    python benchmarks/nb201_latency.py --gpu

Results are appended to RUNS_DIR/results.jsonl as each search ends; rerunning with the same
RUNS_DIR skips the searches already done (so an interrupted sweep continues), and --report-only
rebuilds the table, report and plot from that file.
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import DEVICE_NAMES, append_result, load_results

from dcanas.spaces.nb201.ops import NONE_INDEX

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10_jpg.tar.gz"
DEFAULT_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"
# about the 10th, 25th and 50th percentiles of each device's measured latency over the none-free archs
DEFAULT_BUDGETS = {"pixel3": [6.0, 10.0, 14.0], "raspi4": [16.0, 25.0, 35.0]}
GPU_PRESET = {"device": "cuda", "epochs": 50, "batch_size": 256, "search_cells": 15, "search_channels": 16,
              "seeds": [0, 1, 2]}
CPU_DEFAULTS = {"device": "cpu", "epochs": 1, "batch_size": 64, "search_cells": 6, "search_channels": 16,
                "seeds": [0]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", nargs="+", default=list(DEFAULT_BUDGETS), help="benchmark devices")
    p.add_argument("--budget", action="append", default=[], metavar="DEVICE=MS,MS,...",
                   help="latency budgets of one device (repeatable; default pixel3=6,10,14 raspi4=16,25,35)")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--dataset", default="imagefolder")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--table", default=str(DEFAULT_TABLE), help="the NB201 CSV")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-steps", type=int, help="stop each search after this many steps (smoke tests)")
    p.add_argument("--search-cells", type=int, help="supernet cells (ceil(cells/3) per stage)")
    p.add_argument("--search-channels", type=int)
    p.add_argument("--device", help="cpu, cuda, ...")
    p.add_argument("--gpu", action="store_true",
                   help="GPU preset: " + ", ".join(f"{k}={v}" for k, v in GPU_PRESET.items()))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on a CPU (default 1)")
    p.add_argument("--no-unconstrained", action="store_true", help="skip the unconstrained baseline")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "nb201_latency"))
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "results" / "nb201_latency.md"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "nb201_latency.png"))
    p.add_argument("--report-only", action="store_true", help="rebuild report and plot from results.jsonl")
    p.add_argument("--note", default="", help="a paragraph for the report (e.g. what was cut and why)")
    args = p.parse_args(argv)
    preset = GPU_PRESET if args.gpu else CPU_DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    budgets = {d: list(v) for d, v in DEFAULT_BUDGETS.items()}
    for spec in args.budget:
        device, _, values = spec.partition("=")
        budgets[device] = [float(v) for v in values.split(",") if v]
    args.budgets = {d: budgets[d] for d in args.devices}
    return args


# -- the benchmark's truth -----------------------------------------------------------------

def pareto_front(latency: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The architectures no other beats on both: sorted by latency, accuracy strictly rising."""
    order = np.lexsort((-accuracy, latency))
    keep, best = [], -np.inf
    for k in order:
        if accuracy[k] > best:
            keep.append(k)
            best = accuracy[k]
    keep = np.array(keep)
    return latency[keep], accuracy[keep]


def best_within(bench, device: str, limit: float, *, none_free: bool = False) -> float:
    """The highest CIFAR-10 test accuracy of any architecture (without `none` edges) within `limit` ms on `device`."""
    ok = bench.latency[device] <= limit
    if none_free:
        ok &= (bench.op_indices() != NONE_INDEX).all(axis=1)
    return float(bench.accuracy["cifar10"][ok].max()) if ok.any() else float("nan")


# -- the searches ----------------------------------------------------------------------------

def run_one(args: argparse.Namespace, seed: int, device: str | None, limit: float | None, bench,
            models: dict) -> dict[str, Any]:
    """One search, looked up in the benchmark table."""
    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import run_search

    name = f"{device}-{limit:g}ms-seed{seed}" if device else f"unconstrained-seed{seed}"
    config = SearchConfig(space="nb201", dataset=args.dataset, data_dir=args.data_dir, max_latency=limit,
                          latency_device=device, bench_table=args.table, epochs=args.epochs,
                          batch_size=args.batch_size, max_steps=args.max_steps, cells=args.search_cells,
                          channels=args.search_channels, device=args.device, seed=seed)
    t0 = time.perf_counter()
    result = run_search(config, Path(args.runs_dir) / name, progress=False, log=lambda m: None)
    wall = time.perf_counter() - t0
    arch = str(result.genotype)
    row = bench.row(arch)
    return {"name": name, "kind": "dca-nas" if device else "unconstrained", "device": device, "budget": limit,
            "seed": seed, "arch": arch, "index": int(bench.indices[row]),
            "raw_arch": str(result.raw_genotype), "repairs": list(result.repairs),
            "test_acc": {d: float(v[row]) for d, v in bench.accuracy.items()},
            "latency_ms": {d: float(bench.latency[d][row]) for d in args.devices},
            "fitted_latency_ms": {d: float(models[d].additive_cost(arch)["latency"]) for d in args.devices},
            "steps": result.steps, "search_seconds": round(result.seconds, 1), "wall_seconds": round(wall, 1),
            "command": args.command,
            "config": {k: v for k, v in config.to_dict().items()
                       if k in ("epochs", "batch_size", "max_steps", "cells", "channels", "device", "bottleneck")}}


def cached_datasets() -> None:
    """Decode the 60,000 JPEGs once for the whole sweep, not once per search (this script only)."""
    from dcanas import search_loop as search

    if hasattr(search, "load_dataset"):
        search.load_dataset = functools.lru_cache(maxsize=2)(search.load_dataset)


def sweep(args: argparse.Namespace, bench, models: dict) -> list[dict]:
    path = Path(args.runs_dir) / "results.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["name"]: r for r in load_results(path)}
    plan = []
    for seed in args.seeds:
        if not args.no_unconstrained:
            plan.append((seed, None, None))
        plan += [(seed, d, b) for d in args.devices for b in args.budgets[d]]
    cached_datasets()
    for k, (seed, device, limit) in enumerate(plan, 1):
        name = f"{device}-{limit:g}ms-seed{seed}" if device else f"unconstrained-seed{seed}"
        if name in done:
            print(f"[{k}/{len(plan)}] {name}: done before, skipped", flush=True)
            continue
        record = run_one(args, seed, device, limit, bench, models)
        append_result(path, record)
        done[name] = record
        lat = ", ".join(f"{d} {v:.2f} ms" for d, v in record["latency_ms"].items())
        print(f"[{k}/{len(plan)}] {name}: {record['arch']} (index {record['index']}) CIFAR-10 "
              f"{record['test_acc']['cifar10']:.2f}%, {lat}, {record['wall_seconds']:.0f} s", flush=True)
    return [done[n] for n in done if _planned(done[n], args)]


def _planned(r: dict, args: argparse.Namespace) -> bool:
    if r["seed"] not in args.seeds:
        return False
    if r["kind"] == "unconstrained":
        return not args.no_unconstrained
    return r["device"] in args.devices and r["budget"] in args.budgets[r["device"]]


def table_rows(results: list[dict], bench, args: argparse.Namespace) -> list[str]:
    lines = [("| device | search | budget (ms) | seed | arch (index) | true latency (ms) | fitted model (ms) "
              "| within | CIFAR-10 test % | best within budget % (all / none-free) | repairs | search s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for device in args.devices:
        rows = [r for r in results if r["kind"] == "unconstrained"] + \
               sorted((r for r in results if r["device"] == device), key=lambda r: (r["budget"], r["seed"]))
        for r in rows:
            true, fitted = r["latency_ms"][device], r["fitted_latency_ms"][device]
            budget = r["budget"]
            within = "-" if budget is None else ("yes" if true <= budget else "**no**")
            oracle = "-" if budget is None else _oracle(bench, device, budget)
            lines.append(f"| {device} | {'DCA-NAS' if budget is not None else 'unconstrained'} | "
                         f"{'-' if budget is None else f'{budget:g}'} | {r['seed']} | {r['index']} | {true:.2f} | "
                         f"{fitted:.2f} | {within} | {r['test_acc']['cifar10']:.2f} | {oracle} | "
                         f"{len(r['repairs'])} | {r['search_seconds']:.0f} |")
    return lines


def summary_rows(results: list[dict], bench, args: argparse.Namespace) -> list[str]:
    lines = [("| device | budget (ms) | runs | true latency mean (max) | within | CIFAR-10 test % mean ± sd "
              "| best within budget % (all / none-free) |"), "|---|---|---|---|---|---|---|"]
    for device in args.devices:
        groups = [(None, [r for r in results if r["kind"] == "unconstrained"])]
        groups += [(b, [r for r in results if r["device"] == device and r["budget"] == b])
                   for b in args.budgets[device]]
        for budget, rs in groups:
            if not rs:
                continue
            lat = np.array([r["latency_ms"][device] for r in rs])
            acc = np.array([r["test_acc"]["cifar10"] for r in rs])
            within = "-" if budget is None else f"{int((lat <= budget).sum())}/{len(rs)}"
            oracle = "-" if budget is None else _oracle(bench, device, budget)
            sd = f" ± {acc.std(ddof=1):.2f}" if len(rs) > 1 else ""
            lines.append(f"| {device} | {'none' if budget is None else f'{budget:g}'} | {len(rs)} | "
                         f"{lat.mean():.2f} ({lat.max():.2f}) | {within} | {acc.mean():.2f}{sd} | {oracle} |")
    return lines


def _oracle(bench, device: str, budget: float) -> str:
    return f"{best_within(bench, device, budget):.2f} / {best_within(bench, device, budget, none_free=True):.2f}"


def model_gap_rows(bench, args: argparse.Namespace) -> list[str]:
    """Per budget: how many none-free archs the fitted model calls within budget whose measurement is over."""
    from dcanas.spaces.nb201.bench import fit_latency_model

    ops = bench.op_indices()
    free = (ops != NONE_INDEX).all(axis=1)
    lines = [("| device | budget (ms) | archs within (model) | within (measured) | model says within, measured over "
              "| worst overshoot (ms) |"), "|---|---|---|---|---|---|"]
    for device in args.devices:
        pred = fit_latency_model(bench, device, exclude_none=True).predict_many(ops[free])
        true = bench.latency[device][free]
        for b in args.budgets[device]:
            fits, wrong = pred <= b, (pred <= b) & (true > b)
            worst = f"{(true[wrong] - b).max():.2f}" if wrong.any() else "-"
            lines.append(f"| {device} | {b:g} | {int(fits.sum())} | {int((true <= b).sum())} | "
                         f"{int(wrong.sum())} ({100 * wrong.sum() / max(fits.sum(), 1):.1f}%) | {worst} |")
    return lines


def plot(results: list[dict], bench, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = bench.accuracy["cifar10"]
    fig, axes = plt.subplots(1, len(args.devices), figsize=(6.2 * len(args.devices), 4.6), squeeze=False)
    for ax, device in zip(axes[0], args.devices):
        lat = bench.latency[device]
        ax.scatter(lat, acc, s=2, c="0.82", lw=0, label="all 15,625 NB201 archs", rasterized=True)
        fx, fy = pareto_front(lat, acc)
        ax.step(fx, fy, where="post", color="crimson", lw=1.2, label="benchmark Pareto front")
        free_of_none = (bench.op_indices() != NONE_INDEX).all(axis=1)
        fx, fy = pareto_front(lat[free_of_none], acc[free_of_none])
        ax.step(fx, fy, where="post", color="crimson", lw=0.9, ls=":",
                label="Pareto front without `none` edges (what derive() can return)")
        colours = plt.cm.viridis(np.linspace(0.1, 0.85, max(len(args.budgets[device]), 1)))
        for colour, budget in zip(colours, args.budgets[device]):
            ax.axvline(budget, color=colour, ls="--", lw=0.9)
            rs = [r for r in results if r["device"] == device and r["budget"] == budget]
            if rs:
                ax.scatter([r["latency_ms"][device] for r in rs], [r["test_acc"]["cifar10"] for r in rs],
                           color=colour, edgecolor="black", s=46, zorder=3, label=f"DCA-NAS, budget {budget:g} ms")
        free = [r for r in results if r["kind"] == "unconstrained"]
        if free:
            ax.scatter([r["latency_ms"][device] for r in free], [r["test_acc"]["cifar10"] for r in free],
                       marker="X", color="black", s=60, zorder=3, label="no constraint (DARTS-style)")
        ax.set_xlabel(f"true latency on {DEVICE_NAMES.get(device, device)} (ms, benchmark table)")
        ax.set_ylabel("true CIFAR-10 test accuracy (%, benchmark table)")
        shown = [r["test_acc"]["cifar10"] for r in results if r["kind"] == "unconstrained" or r["device"] == device]
        ax.set_ylim(min([80.0] + [a - 1.5 for a in shown]), float(acc.max()) + 0.6)  # every run in view
        ax.set_xlim(0, float(np.percentile(lat, 99.5)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(DEVICE_NAMES.get(device, device))
    fig.suptitle(f"DCA-NAS on NAS-Bench-201 (CIFAR-10 search: {describe_budget(args)})", fontsize=9)
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=130)
    plt.close(fig)


def describe_budget(args: argparse.Namespace) -> str:
    steps = f", at most {args.max_steps} steps" if args.max_steps else ""
    return (f"{args.epochs} epoch(s){steps}, batch {args.batch_size}, supernet {args.search_cells} cells x "
            f"{args.search_channels} ch, seeds {' '.join(map(str, args.seeds))}, {args.device}")


def _sweep_commands(results: list[dict], command: str) -> str:
    others = sorted({r.get("command") for r in results if r.get("command") and r.get("command") != command})
    if not others:
        return ""
    return "\nThe searches themselves ran under:\n\n```\n" + "\n".join(others) + "\n```\n"


def write_report(results: list[dict], bench, args: argparse.Namespace, command: str, wall: float) -> str:
    fit = "R² " + ", ".join(f"{d} {args.fits[d]:.4f}" for d in args.devices)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
               f"{platform.platform()}, Python {platform.python_version()}, torch {torch.__version__}"
               + (f", {torch.cuda.get_device_name(0)}" if args.device.startswith("cuda") and torch.cuda.is_available()
                  else f", {args.threads} torch thread(s)"))
    load = f"load average at the end {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    text = f"""# DCA-NAS on NAS-Bench-201: true accuracy vs true latency (Pixel 3, Raspberry Pi 4)

DCA-NAS searches NAS-Bench-201's cell on CIFAR-10 (`dataset {args.dataset}`, the JPEG copy, split 50/50
into weight and alpha halves of the 50,000 training images) under a latency budget on each device, and the
same search without a constraint. Each found architecture is looked up in the benchmark table
(`{Path(args.table).name}`): its true CIFAR-10 test accuracy (200-epoch training, the benchmark's) and its
measured latency. "best in table within budget" is the accuracy of the best architecture whose measured
latency fits (over all 15,625 / over the 4,096 without `none` edges, which is what the search derives): the
ceiling a search could reach.

How the budget is met: the constraint's value is the *measured* latency of the derived architecture
(benchmark table) and its gradient that of an additive model fitted per device to the 4,096 none-free
architectures ({fit}); the final repair checks measured latencies. So "within" is about the true latency.
Had the guarantee been on the fitted model instead, this is how often it would have been wrong (over the 4,096
none-free architectures):

{chr(10).join(model_gap_rows(bench, args))}

Search settings: {describe_budget(args)}. {args.note}

Command ({len(results)} searches, {sum(r["wall_seconds"] for r in results) / 60:.1f} min of search wall time summed
over them; this invocation took {wall / 60:.1f} min{', rebuilding the report from results.jsonl' if args.report_only else
', data decoding included; searches found in results.jsonl were not rerun'}):

```
{command}
```
{_sweep_commands(results, command)}
Machine: {machine}; {load}.

## Summary

{chr(10).join(summary_rows(results, bench, args))}

## Every run

{chr(10).join(table_rows(results, bench, args))}

![accuracy vs latency](../../docs/{Path(args.plot).name})
"""
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/nb201_latency.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    args.command = command
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    from dcanas.spaces.nb201.bench import latency_cost_table, load_nb201_table

    bench = load_nb201_table(args.table)
    models = {d: latency_cost_table(d, bench, exclude_none=True) for d in args.devices}
    args.fits = {d: float(m.notes["latency"].split("R2 ")[1].split()[0]) for d, m in models.items()}
    t0 = time.perf_counter()
    if args.report_only:
        results = [r for r in load_results(Path(args.runs_dir) / "results.jsonl") if _planned(r, args)]
    else:
        results = sweep(args, bench, models)
    wall = time.perf_counter() - t0
    print("\n".join(summary_rows(results, bench, args)))
    print()
    print("\n".join(table_rows(results, bench, args)))
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(write_report(results, bench, args, command, wall))
    if args.plot and results:
        plot(results, bench, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
