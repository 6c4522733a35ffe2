"""What a run leaves behind for people: genotype files, cell diagrams, plots and a short report."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cost import FLOPS_CONVENTION, CostTable
from .runs import atomic_write_text, write_json
from .spaces.darts.genotype import Genotype
from .units import readable

if TYPE_CHECKING:
    from .search_loop import SearchConfig, SearchResult


def cell_dot(edges: list[tuple[str, int]], concat: list[int], name: str) -> str:
    """A graphviz description of one cell (inputs c_{k-2}, c_{k-1}, intermediate nodes, output)."""
    lines = [f'digraph "{name}" {{', "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor=lightblue];',
             '  "c_{k-2}" [fillcolor=darkseagreen2];', '  "c_{k-1}" [fillcolor=darkseagreen2];',
             '  "c_{k}" [fillcolor=palegoldenrod];']
    label = {0: "c_{k-2}", 1: "c_{k-1}"}
    for k, (op, i) in enumerate(edges):
        j = 2 + k // 2
        label.setdefault(j, str(j - 2))
        lines.append(f'  "{label.get(i, str(i - 2))}" -> "{label[j]}" [label="{op}"];')
    for j in concat:
        lines.append(f'  "{label.get(j, str(j - 2))}" -> "c_{{k}}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_cell_diagrams(genotype: Genotype, run_dir: Path) -> list[Path]:
    """normal.dot / reduce.dot, rendered to PNG and SVG when graphviz's `dot` is installed."""
    written = []
    for name, edges, concat in (("normal", genotype.normal, genotype.normal_concat),
                                ("reduce", genotype.reduce, genotype.reduce_concat)):
        dot_path = run_dir / f"cell_{name}.dot"
        atomic_write_text(dot_path, cell_dot(edges, list(concat), name))
        written.append(dot_path)
        if shutil.which("dot"):
            for fmt in ("png", "svg"):
                out = dot_path.with_suffix(f".{fmt}")
                subprocess.run(["dot", f"-T{fmt}", str(dot_path), "-o", str(out)], check=False,
                               capture_output=True, timeout=60)
                if out.exists():
                    written.append(out)
    return written


def plot_search(history: list[dict[str, Any]], budgets: dict[str, dict], path: Path) -> None:
    """Validation accuracy, derived size against each budget, and the multipliers, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [h["epoch"] + 1 for h in history]
    rows = [h["metrics"] for h in history]
    metrics = list(budgets) or ["params"]
    fig, axes = plt.subplots(1, 2 + len(metrics), figsize=(4.2 * (2 + len(metrics)), 3.4))
    axes[0].plot(epochs, [float("nan") if r["val_acc"] is None else r["val_acc"] for r in rows],
                 label="val (alpha batches; none in warm-up)")
    axes[0].plot(epochs, [r["train_acc"] for r in rows], label="train")
    axes[0].set(title="supernet accuracy", xlabel="epoch")
    axes[0].legend()
    for ax, metric in zip(axes[1:], metrics):
        ax.plot(epochs, [r[f"derived_{metric}"] for r in rows], label="derived network")
        if f"search_{metric}" in rows[0]:
            ax.plot(epochs, [r[f"search_{metric}"] for r in rows], "--", label="k_s (search estimate)")
        if metric in budgets:
            ax.axhline(budgets[metric]["limit"], color="red", lw=1, label="budget")
        ax.set(title=f"deployed {metric}", xlabel="epoch")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for metric in budgets:
        if f"lambda_{metric}" in rows[0]:
            ax.plot(epochs, [r[f"lambda_{metric}"] for r in rows], label=f"lambda {metric}")
    ax.set(title="Lagrange multipliers", xlabel="epoch")
    if budgets:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_alphas(history: list[dict[str, Any]], ops: tuple[str, ...], path: Path) -> None:
    """Softmax alpha of each op, averaged over edges, per epoch (normal and reduce cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [h["epoch"] + 1 for h in history]
    names = list(history[0]["alphas"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, key in zip(axes, names):
        for o, op in enumerate(ops):
            ax.plot(epochs, [sum(row[o] for row in h["alphas"][key]) / len(h["alphas"][key]) for h in history],
                    label=op)
        ax.set(title=key.replace("_", " "), xlabel="epoch")
    axes[0].set_ylabel("mean softmax weight")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_search_report(result: "SearchResult", config: "SearchConfig", table: CostTable,
                        history: list[dict[str, Any]], stopped_early: bool = False) -> None:
    """genotype.json/.txt, result.json, cell diagrams, plots and report.md in the run folder."""
    run_dir = Path(result.run_dir)
    g = result.genotype
    space = result.space
    write_json(run_dir / "genotype.json", space.to_dict(g))
    atomic_write_text(run_dir / "genotype.txt", space.to_text(g) + "\n")
    write_json(run_dir / "result.json", {**result.to_dict(), "flops_convention": FLOPS_CONVENTION,
                                         "config": config.to_dict()})
    space.write_diagrams(g, run_dir)
    plot_search(history, result.budgets, run_dir / "search.png")
    plot_alphas(history, tuple(table.ops), run_dir / "alphas.png")
    s = result.setting
    lines = [
        f"# DCA-NAS search: {config.dataset}",
        "",
        f"Search space: {config.space}. Deployed network: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.to_dict().items()) + ".",
        f"Search: {result.steps} steps in {result.seconds:.1f} s, supernet {config.cells} cells x {config.channels} "
        f"channels, bottleneck {config.bottleneck}, weight sharing {'on' if config.weight_sharing else 'off'}, "
        f"derived cells {'on' if config.derived_cells else 'off'}, constraint `{config.constraint}`"
        + (" (stopped early by --max-steps)" if stopped_early else "") + ".",
        "",
        "| metric | budget | deployed | within |",
        "|---|---|---|---|",
    ]
    for metric, b in result.budgets.items():
        lines.append(f"| {metric} | {readable(b['limit'])} | {readable(b['value'])} | {'yes' if b['ok'] else 'NO'} |")
    lines += [f"| params (no aux) | | {result.params:,} | |", f"| FLOPs | | {result.flops:,} | |", "",
              f"FLOPs convention: {FLOPS_CONVENTION}.", "", "Genotype:", "", "```",
              space.to_text(g), "```", ""]
    if result.benchmark:
        lines += ["Benchmark look-up of the found architecture (true figures, no training needed):", ""]
        lines += [f"- {k}: {v}" for k, v in result.benchmark.items()] + [""]
    if result.repairs:
        lines += ["The derived network exceeded a budget and was repaired (cheaper ops the alphas rank next):", ""]
        lines += [f"- {r}" for r in result.repairs] + ["", "Before repair: `" + space.to_text(result.raw_genotype)
                                                       + "`", ""]
    if result.fills:
        lines += ["Unused budget was spent on costlier convolutions the alphas rank next (--fill-budget):", ""]
        lines += [f"- {r}" for r in result.fills] + ["", "Before: `" + space.to_text(result.raw_genotype) + "`", ""]
    lines += ["![search](search.png)", "", "![alphas](alphas.png)", ""]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))
