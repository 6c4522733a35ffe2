"""Search-time ablation, like the paper's Figure 4a: what each DCA-NAS saving buys on this machine.

    python benchmarks/search_ablation.py --data-dir ../shared/data/cifar10-jpeg/cifar10_jpg.tar.gz \\
        --as-cifar10 runs/cifar10-batches --steps 20

Rows are cumulative (plain DARTS, + weight sharing, + channel bottleneck, + derived cells,
+ params constraint), the same configurations as `search_step.py`. Each row is a real `dcanas search`
process (one torch thread) stopped after `--steps` steps: seconds per step, the epoch time that
implies (steps per epoch of the weight half of the training set; extrapolated, not run), and the
process's peak memory. Then every derived genotype is trained with the identical short recipe and
its test accuracy reported.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import CONFIGS, append_result, cifar10_batches, data_argv, machine, run_dcanas, study_command, train_argv

ROWS = [name for name, spec in CONFIGS.items() if not spec.get("child")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: the reduced CPU run in BENCHMARKS.md)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="imagefolder")
    p.add_argument("--data-dir")
    p.add_argument("--as-cifar10", metavar="DIR", help="decode a CIFAR-10 imagefolder once into python batches here")
    p.add_argument("--steps", type=int, default=20, help="search steps per configuration")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--budget", default="250K", help="params budget of the constrained row")
    p.add_argument("--cells", type=int, default=8, help="deployed network's cells")
    p.add_argument("--channels", type=int, default=16, help="deployed network's channels")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("training of each derived genotype (identical for all rows)")
    g.add_argument("--train-epochs", type=int, default=2)
    g.add_argument("--train-subset", type=int, default=5000)
    g.add_argument("--train-batch", type=int, default=96)
    g.add_argument("--lr", type=float, default=0.05)
    g.add_argument("--cutout", type=int, default=0)
    g.add_argument("--drop-path", type=float, default=0.0)
    g.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (searches run one at a time)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/search_ablation"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/search_ablation.md"))
    p.add_argument("--plot", type=Path, default=Path("docs/search_ablation.png"))
    p.add_argument("--note", default="")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


def search_flags(spec: dict[str, Any], budget: str) -> list[str]:
    """`dcanas search` flags for one configuration of search_step.CONFIGS."""
    flags = ["--no-bottleneck"] if spec["bottleneck"] == 1 else ["--bottleneck", str(spec["bottleneck"])]
    flags += [] if spec["weight_sharing"] else ["--no-weight-sharing"]
    flags += [] if spec["derived_cells"] else ["--no-derived-cells"]
    return flags + (["--max-params", budget] if spec.get("constraint") else ["--unconstrained"])


def run_rows(args: argparse.Namespace) -> None:
    """Search each row (one at a time, so timings do not share the CPU with each other), then train."""
    path = args.runs_dir / "results.jsonl"
    done = {json.loads(line)["row"] for line in path.read_text().splitlines()} if path.exists() else set()
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    searches = {}
    for i, row in enumerate(ROWS):
        if row in done:
            continue
        folder = args.runs_dir / f"row{i}"
        print(f"search: {row}", flush=True)
        searches[row] = run_dcanas(
            ["search", *data_argv(args), *search_flags(CONFIGS[row], args.budget), "--cells", str(args.cells),
             "--channels", str(args.channels), "--batch-size", str(args.batch), "--max-steps", str(args.steps),
             "--seed", str(args.seed), "--device", args.device, "--run-dir", str(folder / "search")],
            folder / "search.log")

    def train(row: str) -> None:
        folder = args.runs_dir / f"row{ROWS.index(row)}"
        result = run_dcanas(["train", str(folder / "search"), *train_argv(args, args.seed),
                             "--run-dir", str(folder / "train")], folder / "train.log")
        append_result(path, {"row": row, "search": searches[row], "train": result})
        print(f"trained: {row}: test {100 * result['test_acc']:.2f}%", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(train, row) for row in searches]:
            future.result()


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Three bar charts: epoch time, peak memory, derived network's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["row"].replace(" (all savings off)", "").replace(" (all on)", "").replace(" (k=4)", "")
              for r in rows]
    panels = [("search epoch (min, extrapolated)", [r["epoch_min"] for r in rows]),
              ("peak memory (GiB)", [r["search"]["peak_mib"] / 1024 for r in rows]),
              ("derived network test accuracy (%)", [100 * r["train"]["test_acc"] for r in rows])]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (title, values) in zip(axes, panels):
        bars = ax.bar(range(len(rows)), values, color="tab:blue")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(rows)), labels, rotation=25, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(args: argparse.Namespace, command: str) -> None:
    """Markdown table and bar chart from results.jsonl."""
    path = args.runs_dir / "results.jsonl"
    found = {r["row"]: r for r in map(json.loads, path.read_text().splitlines())} if path.exists() else {}
    rows = [found[name] for name in ROWS if name in found]
    if not rows:
        raise SystemExit(f"no results in {path}")
    for r in rows:
        s = r["search"]
        r["step_s"] = s["search_seconds"] / s["steps"]
        r["epoch_min"] = r["step_s"] * args.steps_per_epoch / 60
    base = rows[0]
    plot(rows, args.plot)
    out = ["# Search-time ablation (the paper's Figure 4a) on this machine", "",
           f"`dcanas search` on {args.dataset} ({args.data_dir}), supernet 8 cells x 16 channels, batch {args.batch}, "
           f"{args.steps} steps per configuration, one torch thread, one search at a time. Epoch time = s/step x "
           f"{args.steps_per_epoch} steps (one pass over the weight half of the training set), extrapolated. Each "
           f"derived genotype is then trained in a {args.cells}-cell, {args.channels}-channel network for "
           f"{args.train_epochs} epochs over {args.train_subset} training images (batch {args.train_batch}, lr {args.lr} "
           f"cosine, cutout {args.cutout}, drop-path {args.drop_path}), seed {args.seed}; test accuracy on the full "
           "test set.", ""]
    if args.note:
        out += [f"**What was cut:** {args.note}", ""]
    out += ["| configuration | s/step | epoch (min) | speed-up | peak MiB | memory vs plain | derived params | "
            "test % |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['row']} | {r['step_s']:.2f} | {r['epoch_min']:.1f} | {base['step_s'] / r['step_s']:.1f}x | "
                   f"{r['search']['peak_mib']} | {r['search']['peak_mib'] / base['search']['peak_mib']:.2f} | "
                   f"{r['train']['params']:,} | {100 * r['train']['test_acc']:.2f} |")
    out += ["", f"![ablation]({os.path.relpath(args.plot, args.out.parent)})", "", "Genotypes:", ""]
    out += [f"- {r['row']}: `{r['train']['genotype']}`" for r in rows]
    out += ["", "Command:", "", "```", command, "```", "", f"Machine: {machine()}.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(out))
    print("\n".join(out[: out.index("Genotypes:")]))


def main(argv: list[str] | None = None) -> int:
    """Run the missing rows, then write the report."""
    args = parse_args(argv)
    command = study_command("benchmarks/search_ablation.py", sys.argv[1:] if argv is None else argv)
    if args.as_cifar10:
        args.dataset, args.data_dir = "cifar10", str(cifar10_batches(args.data_dir, Path(args.as_cifar10)))
    if not args.report_only:
        run_rows(args)
    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import dry_run

    train_images = dry_run(SearchConfig(dataset=args.dataset, data_dir=args.data_dir))["dataset"]["train"]
    args.steps_per_epoch = train_images // 2 // args.batch  # the search trains weights on one half
    report(args, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
