"""Did the search settle? How much of the alphas' derived cell moved in the last quarter of each search.

Runs `dcanas search` for each named setting and seed (one thread each, `--jobs` at a time) and reads the
trace every search now records (`result.json` -> "settling", src/dcanas/settling.py): how often the derived
cell changed, and how many of the final cell's edges the last quarter of the alpha steps moved (against the
cell it began with) or did not hold fixed (absent at some step of it). A search whose last quarter did not
hold every edge fixed hands over a cell that is partly where it stopped.

    python benchmarks/settling.py --settings digits digits-50 nb201-cpu fm14-300 --seeds 0 1 2 --jobs 2

Results go to RUNS_DIR/results.jsonl as they finish (an interrupted study continues), the table to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import append_result, load_results, machine, mean_sd, run_dcanas, study_command

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10_jpg.tar.gz"
NB201_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"

# name -> (what it is, `dcanas search` options)
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "digits": ("digits, the README's main job (15 epochs, 200K params)", []),
    "digits-50": ("digits, 50 epochs, 200K params", ["--epochs", "50"]),
    "digits-unc": ("digits, 15 epochs, no budget (`--unconstrained`)", ["--unconstrained"]),
    "digits-unc-50": ("digits, 50 epochs, no budget", ["--unconstrained", "--epochs", "50"]),
    "digits-none": ("digits, 15 epochs, 200K params, `--remedy none` (plain softmax)", ["--remedy", "none"]),
    "digits-noderived": ("digits, 15 epochs, 200K params, `--no-derived-cells` (every cell mixed)",
                         ["--no-derived-cells"]),
    "digits-lr": ("digits, 15 epochs, 200K params, alpha lr 1.2e-2 (20x: 165 steps travel as far as PC-DARTS's)",
                  ["--arch-lr", "1.2e-2"]),
    "nb201-cpu": ("NAS-Bench-201 CIFAR-10, the `cpu` protocol of §12, unconstrained",
                  ["--space", "nb201", "--dataset", "imagefolder", "--data-dir", str(CIFAR10), "--bench-table",
                   str(NB201_TABLE), "--unconstrained", "--epochs", "4", "--batch-size", "64", "--search-cells", "3",
                   "--search-channels", "16", "--train-subset", "10000", "--search-image-size", "16",
                   "--arch-lr", "3e-3"]),
    "fm14-300": ("Fashion-MNIST 14 px, 500K, 300 steps (§8d, width 22)",
                 ["--dataset", "fashion-mnist", "--image-size", "14", "--max-params", "500K", "--cells", "8",
                  "--channels", "22", "--batch-size", "128", "--max-steps", "300", "--arch-lr", "3e-3",
                  "--warmup-epochs", "0.32"]),
    "fm14-900": ("Fashion-MNIST 14 px, 500K, 900 steps, 1-epoch warm-up (§8d's long search, width 22)",
                 ["--dataset", "fashion-mnist", "--image-size", "14", "--max-params", "500K", "--cells", "8",
                  "--channels", "22", "--batch-size", "128", "--max-steps", "900", "--arch-lr", "3e-3",
                  "--warmup-epochs", "1.0"]),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="searches at once (one thread each)")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "settling")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "settling.md")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "settling.png")
    p.add_argument("--report-only", action="store_true", help="rebuild the table from results.jsonl, run nothing")
    return p.parse_args(argv)


def run_one(args: argparse.Namespace, name: str, seed: int) -> dict[str, Any]:
    """One search; the row the table needs."""
    folder = args.runs_dir / f"{name}_s{seed}"
    result = run_dcanas(["search", *SETTINGS[name][1], "--seed", str(seed), "--run-dir", str(folder / "search")],
                        folder / "search.log")
    row = {"setting": name, "seed": seed, "settling": result["settling"], "genotype": result["genotype"],
           "seconds": result["wall_seconds"], "flatness": alpha_flatness(folder / "search")}
    if "benchmark" in result:  # NB201: the table's test accuracy of the cell found
        row["benchmark"] = result["benchmark"]
    return row


def alpha_flatness(run_dir: Path) -> dict[str, float] | None:
    """How far the final alphas are from uniform: each edge's top mixing weight and its lead over the second
    (softmax of the checkpoint's alphas, edges of the searched cell types), averaged; None without a checkpoint."""
    import torch

    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        return None
    model = torch.load(path, map_location="cpu", weights_only=True)["model"]
    tops, gaps, uniform = [], [], []
    for name, alpha in model.items():
        if not name.startswith("alpha") or alpha.dim() != 2:
            continue
        weights = torch.softmax(alpha.float(), dim=-1)
        if bool((weights.max(-1).values > 0.99).all()):  # a pinned (fixed) cell, not searched
            continue
        top2 = weights.topk(2, dim=-1).values
        tops += top2[:, 0].tolist()
        gaps += (top2[:, 0] - top2[:, 1]).tolist()
        uniform.append(1.0 / alpha.shape[-1])
    return {"top_weight": sum(tops) / len(tops), "top_gap": sum(gaps) / len(gaps), "uniform": uniform[0]}


def summary_rows(rows: list[dict[str, Any]], names: list[str]) -> list[str]:
    """One markdown row per setting: mean ± sd over its seeds."""
    def ms(values: list[float]) -> str:
        return mean_sd(values, digits=1)

    out = []
    for name in names:
        got = [r for r in rows if r["setting"] == name]
        if not got:
            continue
        s = [r["settling"] for r in got]
        unsettled = [x["unsettled_edges"] for x in s]
        flat = [r["flatness"] for r in got if r.get("flatness")]
        flat_text = (f"{mean_sd([f['top_weight'] for f in flat], digits=3)} (1/{round(1 / flat[0]['uniform'])}) | "
                     f"{mean_sd([f['top_gap'] for f in flat], digits=3)}" if flat else "- | -")
        out.append(f"| {SETTINGS[name][0]} | {len(got)} | {s[0]['alpha_steps']:,} | "
                   f"{ms([x['changes'] for x in s])} | {ms([x['late_changes'] for x in s])} | "
                   f"{ms([x['late_edges_changed'] for x in s])} | {ms(unsettled)} of {s[0]['edges']} | "
                   f"{sum(m > 0 for m in unsettled)} of {len(got)} | {flat_text} |")
    return out


def plot(rows: list[dict[str, Any]], names: list[str], path: Path) -> None:
    """Share of the final cell's edges not fixed through the last quarter: one bar per setting, a dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in names if any(r["setting"] == n for r in rows)]
    fig, ax = plt.subplots(figsize=(10, 0.8 + 0.55 * len(names)))
    for y, name in enumerate(names):
        shares = [100 * r["settling"]["unsettled_edges"] / r["settling"]["edges"] for r in rows if r["setting"] == name]
        ax.barh(y, sum(shares) / len(shares), color="tab:orange", alpha=0.5)
        ax.plot(shares, [y] * len(shares), "o", color="tab:red", ms=4)
    ax.set_yticks(range(len(names)), [SETTINGS[n][0] for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("% of the final cell's edges not fixed in the last quarter of the search (dots: seeds)", fontsize=8)
    ax.set_xlim(0, 100)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = args.runs_dir / "results.jsonl"
    done = {(r["setting"], r["seed"]) for r in load_results(results)}
    todo = [] if args.report_only else [(n, s) for n in args.settings for s in args.seeds if (n, s) not in done]
    lock = threading.Lock()

    def task(name: str, seed: int) -> None:
        row = run_one(args, name, seed)
        with lock:
            append_result(results, row)
        print(f"done  {name} seed {seed}: {row['settling']}", flush=True)

    args.runs_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(task, *t) for t in todo]:
            future.result()
    rows = [r for r in load_results(results) if r["setting"] in args.settings and r["seed"] in args.seeds]
    for r in rows:  # rows recorded before the flatness columns: read it from the run folder if it is still there
        if "flatness" not in r:
            r["flatness"] = alpha_flatness(args.runs_dir / f"{r['setting']}_s{r['seed']}" / "search")
    lines = ["| setting | seeds | alpha steps | cell changes | in the last quarter | edges the last quarter moved | "
             "edges not fixed through the last quarter | searches with the note | top op's mixing weight (uniform) | "
             "its lead over the second |", "|---|---|---|---|---|---|---|---|---|---|",
             *summary_rows(rows, args.settings)]
    text = "\n".join([f"# Did the search settle? (`benchmarks/settling.py`)", "",
                      f"`{study_command('settling.py', sys.argv[1:] if argv is None else argv)}`", "",
                      machine(), "", *lines, "", f"![settling]({Path('..') / '..' / 'docs' / args.plot.name})", "",
                      "Every search (its trace):", "",
                      *[f"- {r['setting']} seed {r['seed']}: {json.dumps(r['settling'])}"
                        + (f", test accuracy {r['benchmark'].get('test_accuracy')}" if "benchmark" in r else "")
                        for r in rows]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    plot(rows, args.settings, args.plot)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
