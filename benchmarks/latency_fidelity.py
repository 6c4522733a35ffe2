"""How well does a per-op latency table predict the latency of whole networks on this machine?

For random genotypes, compare the table's prediction (fixed part + the selected ops' entries: what
`dcanas search --max-latency` constrains) with the latency onnxruntime measures for the whole
exported network. Prints Pearson r, Spearman rho and relative errors, plots predicted vs measured
(one panel per setting), and writes a markdown report with the exact command and machine.

    python benchmarks/latency_fidelity.py --settings 8x16 20x36 --genotypes 30

Each setting's table is measured as `dcanas profile --ops` does, with `--calibrate K` random
networks (default 8, drawn from another seed than the test genotypes and checked disjoint from
them): its op entries carry one scale factor fitted on those K networks. The report gives the
figures of the calibrated table and of the raw one (the same entries without that factor).
"""
from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcanas.spaces.darts.cost import build_cost_table
from dcanas.spaces.darts.latency import DEFAULT_CALIBRATION, measure_latency_table, op_sum
from dcanas.profile import device_info, measure_modules
from dcanas.spaces.darts.genotype import genotype_to_text, random_genotype
from dcanas.spaces.darts.network import EvalNetwork, EvalSetting, eval_setting_for

ROOT = Path(__file__).resolve().parents[1]


def ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties averaged (Spearman's rho without scipy)."""
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    r[order] = np.arange(len(a), dtype=float)
    for value in np.unique(a):
        tied = a == value
        r[tied] = r[tied].mean()
    return r


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation."""
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation."""
    return pearson(ranks(x), ranks(y))


def figures(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    """Correlations and relative errors of a prediction: bias (mean signed), mean and max absolute."""
    rel = (pred - meas) / meas
    return {"pearson": pearson(pred, meas), "spearman": spearman(pred, meas), "bias": float(rel.mean()),
            "mean_abs": float(np.abs(rel).mean()), "max_abs": float(np.abs(rel).max())}


def run_setting(setting: EvalSetting, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one setting's table and test networks; return everything the report needs."""
    t0 = time.time()
    latency = measure_latency_table(setting, threads=args.threads, runs=args.op_runs, rounds=args.rounds,
                                    calibrate=args.calibrate, network_runs=args.runs, progress=not args.quiet)
    table_seconds = time.time() - t0
    table = build_cost_table(setting)
    table.add_metric("latency", latency.entries, latency.fixed)

    rng = random.Random(args.seed)
    genotypes = [random_genotype(rng) for _ in range(args.genotypes)]
    calibration = latency.method.get("calibration", {})
    overlap = set(calibration.get("genotypes", [])) & {genotype_to_text(g) for g in genotypes}
    if overlap:
        raise SystemExit(f"{len(overlap)} test genotypes were used to calibrate the table; pick another --seed")
    generator = torch.Generator().manual_seed(args.seed)
    jobs = []
    for g in genotypes:
        torch.manual_seed(0)
        x = torch.randn(1, setting.in_channels, setting.image_size, setting.image_size, generator=generator)
        jobs.append((EvalNetwork(g, setting).eval(), x))
    t1 = time.time()
    stats = measure_modules(jobs, threads=args.threads, runs=args.runs, rounds=args.rounds, progress=not args.quiet,
                            desc="test networks")
    net_seconds = time.time() - t1

    scale = float(latency.method.get("op_scale", 1.0))
    costs = [table.genotype_cost(g) for g in genotypes]
    pred = np.array([c["latency"] for c in costs])  # what the search sees: fixed + calibrated op entries
    raw = np.array([latency.fixed + op_sum(latency, g) / scale for g in genotypes])
    meas = np.array([st.median_ms for st in stats])
    return {"setting": setting, "latency": latency, "genotypes": genotypes, "costs": costs, "stats": stats,
            "pred": pred, "raw": raw, "meas": meas, "scale": scale, "calibration": calibration,
            "calibrated": figures(pred, meas), "uncalibrated": figures(raw, meas),
            "flops_rho": spearman(np.array([c["flops"] for c in costs], dtype=float), meas),
            "spread": np.array([st.iqr_ms / st.median_ms for st in stats]),
            "table_seconds": table_seconds, "net_seconds": net_seconds}


def describe(s: EvalSetting) -> str:
    """'cifar stem, 8 cells x 16 channels, 3x32x32 input'."""
    return f"{s.style} stem, {s.cells} cells x {s.channels} channels, {s.in_channels}x{s.image_size}x{s.image_size} input"


def print_summary(r: dict[str, Any]) -> None:
    """The figures of one setting on stdout."""
    c, u = r["calibrated"], r["uncalibrated"]
    print(f"\n{describe(r['setting'])}: {len(r['genotypes'])} random genotypes; measured "
          f"{r['meas'].min():.3f} .. {r['meas'].max():.3f} ms; fixed part {r['latency'].fixed:.3f} ms; "
          f"op scale {r['scale']:.3f}")
    print(f"{'':24}{'calibrated':>12}{'raw':>12}")
    for label, key, fmt in (("Pearson r", "pearson", "{:.3f}"), ("Spearman rho", "spearman", "{:.3f}"),
                            ("mean abs rel. error", "mean_abs", "{:.1%}"), ("max abs rel. error", "max_abs", "{:.1%}"),
                            ("bias (mean signed)", "bias", "{:+.1%}")):
        print(f"{label:24}{fmt.format(c[key]):>12}{fmt.format(u[key]):>12}")
    print(f"FLOPs vs measured latency, Spearman rho: {r['flops_rho']:.3f}; median IQR/median of a timing: "
          f"{np.median(r['spread']):.1%}")


def plot(results: list[dict[str, Any]], path: str) -> None:
    """Predicted vs measured, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 5.0), squeeze=False)
    for ax, r in zip(axes[0], results):
        pred, raw, meas, s = r["pred"], r["raw"], r["meas"], r["setting"]
        q1, q3 = np.array([st.q1_ms for st in r["stats"]]), np.array([st.q3_ms for st in r["stats"]])
        # limits from the medians: a burst of load can stretch a bar far beyond them (it is clipped)
        lo, hi = min(pred.min(), raw.min(), meas.min()) * 0.95, max(pred.max(), raw.max(), meas.max()) * 1.05
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="predicted = measured")
        if r["calibration"]:
            u = r["uncalibrated"]
            ax.scatter(raw, meas, s=16, facecolors="none", edgecolors="gray",
                       label=f"raw table: r={u['pearson']:.2f}, mean err {u['mean_abs']:.1%}")
        c = r["calibrated"]
        ax.errorbar(pred, meas, yerr=[meas - q1, q3 - meas], fmt="o", ms=4, lw=0.8, capsize=2,
                    label=f"{'calibrated ' if r['calibration'] else ''}table: r={c['pearson']:.2f}, "
                          f"rho={c['spearman']:.2f}, mean err {c['mean_abs']:.1%} (bars: IQR)")
        ax.set(xlabel="predicted: fixed part + sum of selected ops (ms)",
               ylabel="measured whole network, onnxruntime median (ms)", xlim=(lo, hi), ylim=(lo, hi),
               title=f"{len(r['genotypes'])} random genotypes, {s.cells} cells x {s.channels} ch, "
                     f"{s.image_size}x{s.image_size}")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


def report(results: list[dict[str, Any]], args: argparse.Namespace, command: str, seconds: float,
           loads: tuple[float, float]) -> str:
    """The markdown report."""
    dev = device_info(args.threads)
    plot_rel = os.path.relpath(args.plot, Path(args.report).parent)
    text = f"""# Latency table fidelity

Does the per-op latency table (`dcanas profile --ops`) predict the latency of whole networks on this machine?
For {args.genotypes} random genotypes (`random_genotype`, seed {args.seed}) per setting, the table's prediction
(fixed part + the entries of the selected ops: exactly what `dcanas search --max-latency` constrains) is compared
with the median latency onnxruntime measures for the whole exported network (batch 1, {args.runs} timed runs in
{args.rounds} interleaved rounds after warm-up, inputs and outputs bound once).

How the table is made (see `src/dcanas/spaces/darts/latency.py`): each distinct (op, channels, stride, input size) is timed once
in context (1x1 conv -> op -> global pools, minus the same graph without the op), `none` and stride-1
`skip_connect` are 0, and the fixed part is the all-`none` network with cheap unmergeable placeholders, whose
cost is taken out as 2 x (network with them) - (network with each doubled), both timed in the same rounds. Then {args.calibrate} random networks (seed 1000, disjoint from the test genotypes) are timed
whole and the op entries multiplied by the one least-squares factor that fits them: "calibrated" below is the
table as saved and as the search uses it; "raw" is the same table without that factor.

Command (wall time {seconds:.0f} s):

```
{command}
```

Machine: {dev['processor']}, {dev['cpu_count']} logical CPUs, {dev['platform']}, Python {dev['python']},
torch {torch.__version__}, onnxruntime {dev['onnxruntime']} (CPUExecutionProvider, {args.threads} intra-op thread(s)).
Load average before / after: {loads[0]:.2f} / {loads[1]:.2f}: the machine was shared with other work, so single
timings spread widely; medians of interleaved rounds are what is compared.

## Figures

| setting | table | Pearson r | Spearman rho | mean abs rel. error | max abs rel. error | bias |
|---|---|---|---|---|---|---|
"""
    for r in results:
        s = r["setting"]
        for name in ("calibrated", "uncalibrated"):
            f = r[name]
            label = "calibrated" if name == "calibrated" else "raw"
            text += (f"| {s.cells} cells x {s.channels} ch, {s.image_size}x{s.image_size} | {label} | {f['pearson']:.3f} | "
                     f"{f['spearman']:.3f} | {f['mean_abs']:.1%} | {f['max_abs']:.1%} | {f['bias']:+.1%} |\n")
    text += "\nBias is the mean of (predicted - measured) / measured.\n\n"
    text += f"![predicted vs measured]({plot_rel})\n"
    for r in results:
        s, lat = r["setting"], r["latency"]
        rows = "\n".join(
            f"| {k} | {pr:.3f} | {rw:.3f} | {m:.3f} | {(pr - m) / m:+.1%} | {sp:.1%} | {c['flops'] / 1e6:.1f} | "
            f"`{genotype_to_text(g)}` |"
            for k, (g, pr, rw, m, sp, c) in enumerate(zip(r["genotypes"], r["pred"], r["raw"], r["meas"], r["spread"],
                                                          r["costs"])))
        text += f"""
## {describe(s)}

Table: {sum(1 for m in lat.measurements if m['op'] not in ('base', 'placeholder') and 'channels' in m)} distinct ops
timed, fixed part {lat.fixed:.3f} ms, op scale {r['scale']:.3f}; measured in {r['table_seconds']:.0f} s, test networks
in {r['net_seconds']:.0f} s. Measured latency {r['meas'].min():.3f} .. {r['meas'].max():.3f} ms. For reference, FLOPs
rank these networks' latency with Spearman rho {r['flops_rho']:.3f}. Median run-to-run spread of a whole-network
timing (IQR / median): {np.median(r['spread']):.1%}.

| # | predicted ms | raw ms | measured ms | error (calibrated) | IQR/median | MFLOPs | genotype |
|---|---|---|---|---|---|---|---|
{rows}
"""
    return text


def main(argv: list[str] | None = None) -> int:
    """Measure every setting, print, plot, and write the report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", help="input and classes of the evaluation setting (default cifar10)")
    p.add_argument("--settings", nargs="+", default=["8x16"], metavar="CELLSxCHANNELS",
                   help="evaluation networks to test (default 8x16; the published CIFAR one is 20x36)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--genotypes", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=50, help="timed runs per whole network")
    p.add_argument("--op-runs", type=int, default=200, help="timed runs per op in the table")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calibrate", type=int, default=DEFAULT_CALIBRATION,
                   help="random networks the table's op scale is fitted on (0: none)")
    p.add_argument("--plot", default=str(ROOT / "docs" / "latency_fidelity.png"))
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "results" / "latency_fidelity.md"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    command = "python benchmarks/latency_fidelity.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    # PyTorch only exports and checks here: one thread, so it never competes with onnxruntime's timing
    torch.set_num_threads(1)
    started = time.time()
    load_before = os.getloadavg()[0]
    results = []
    for spec in args.settings:
        cells, channels = (int(v) for v in spec.lower().split("x"))
        setting = eval_setting_for(args.dataset, cells=cells, channels=channels, image_size=args.image_size)
        results.append(run_setting(setting, args))
        print_summary(results[-1])
    plot(results, args.plot)
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(report(results, args, command, time.time() - started,
                                        (load_before, os.getloadavg()[0])))
    print(f"\nplot {args.plot}\nreport {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
