"""What a run leaves behind for people: genotype files, cell diagrams, plots and a short report."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .cost import FLOPS_CONVENTION

from .proxies import BUDGET_VOTER, proxy_ranks, proxy_scores_of
from .spaces.base import SpaceCostTable
from .runs import atomic_write_text, write_json
from .units import readable

if TYPE_CHECKING:
    from .search_config import SearchConfig
    from .search_loop import SearchResult


def cell_dot(edges: list[tuple[str, str, str]], nodes: list[str], name: str) -> str:
    """Graphviz text of a cell: (op, from, to) edges over `nodes`; nodes without incoming edges are inputs,
    the last node the output. The one description of a cell both spaces use."""
    targets = {dst for _, _, dst in edges}
    lines = [f'digraph "{name}" {{', "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor=lightblue];']
    lines += [f'  "{n}" [fillcolor=darkseagreen2];' for n in nodes[:-1] if n not in targets]
    lines.append(f'  "{nodes[-1]}" [fillcolor=palegoldenrod];')
    lines += [f'  "{src}" -> "{dst}"' + (f' [label="{op}"];' if op else ";") for op, src, dst in edges]
    return "\n".join([*lines, "}"]) + "\n"


def write_cell(dot_path: Path, edges: list[tuple[str, str, str]], nodes: list[str], title: str) -> list[Path]:
    """A cell as `.dot` beside its picture (PNG and SVG by graphviz, else a matplotlib PNG)."""
    atomic_write_text(dot_path, cell_dot(edges, nodes, dot_path.stem))
    return [dot_path, *render_cell(dot_path, edges, nodes, title)]


def render_cell(dot_path: Path, edges: list[tuple[str, str, str]], nodes: list[str], title: str) -> list[Path]:
    """PNG (and SVG) of a cell: graphviz when `dot` is installed, else matplotlib, so a run folder always has one."""
    if shutil.which("dot"):
        out = []
        for fmt in ("png", "svg"):
            target = dot_path.with_suffix(f".{fmt}")
            subprocess.run(["dot", f"-T{fmt}", str(dot_path), "-o", str(target)], check=False, capture_output=True,
                           timeout=60)
            out += [target] if target.exists() else []
        if out:
            return out
    target = dot_path.with_suffix(".png")
    draw_cell(edges, nodes, target, title)
    return [target]


def draw_cell(edges: list[tuple[str, str, str]], nodes: list[str], path: Path, title: str) -> None:
    """A cell as a left-to-right graph: `nodes` in order (inputs first, output last), `edges` as (op, from, to)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    inputs = [n for n in nodes if n.startswith("c_{k-") or n == "in"]
    x, y, column = {}, {}, 0
    for n in nodes:
        if n in inputs:  # the inputs stacked in the first column
            x[n], y[n] = 0.0, (len(inputs) - 1) / 2 - inputs.index(n)
        else:  # intermediate nodes zig-zag so that long edges do not run through them
            column += 1
            x[n], y[n] = float(column), 0.0 if n == nodes[-1] else (0.7 if column % 2 else -0.7)
    fig, ax = plt.subplots(figsize=(1.7 * len(nodes) + 1, 3.6))
    for k, (op, a, b) in enumerate(edges):
        span = x[b] - x[a]
        rad = 0.0 if span <= 1 else (0.22 if k % 2 else -0.22)  # alternate sides so parallel edges part
        ax.add_patch(FancyArrowPatch((x[a], y[a]), (x[b], y[b]), arrowstyle="-|>", mutation_scale=12, lw=1,
                                     color="grey" if not op else "black", shrinkA=14, shrinkB=14,
                                     connectionstyle=f"arc3,rad={rad}"))
        if op:  # at the middle of the drawn curve (matplotlib's arc3 is a quadratic Bezier)
            dx, dy = x[b] - x[a], y[b] - y[a]
            mx, my = (x[a] + x[b]) / 2 + 0.5 * rad * dy, (y[a] + y[b]) / 2 - 0.5 * rad * dx
            ax.text(mx, my, op, fontsize=7, ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    colours = {nodes[-1]: "palegoldenrod", **{n: "darkseagreen" for n in inputs}}
    for n in nodes:
        ax.text(x[n], y[n], n.replace("_{", "_").replace("}", ""), ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.4", fc=colours.get(n, "lightblue"), ec="black", lw=0.6))
    ax.set(xlim=(-0.6, max(x.values()) + 0.6), ylim=(-2.2, 2.2), title=title)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    marker = "o" if len(epochs) <= 30 else None  # a one-epoch run is a point, not an empty panel
    axes[0].plot(epochs, [float("nan") if r["val_acc"] is None else r["val_acc"] for r in rows], marker=marker,
                 label="val (alpha batches; none in warm-up)")
    axes[0].plot(epochs, [r["train_acc"] for r in rows], marker=marker, label="train")
    axes[0].set(title="supernet accuracy", xlabel="epoch")
    axes[0].legend()
    for ax, metric in zip(axes[1:], metrics):
        if f"derived_{metric}" in rows[0]:  # not when `dcanas land` lands a search that did not track this metric
            ax.plot(epochs, [r[f"derived_{metric}"] for r in rows], marker=marker, label="derived network")
        if f"search_{metric}" in rows[0]:
            ax.plot(epochs, [r[f"search_{metric}"] for r in rows], "--", marker=marker, label="k_s (search estimate)")
        if metric in budgets:
            ax.axhline(budgets[metric]["limit"], color="red", lw=1, label="budget")
            if budgets[metric].get("value") is not None:  # what is deployed, after any repair or fill
                ax.plot([epochs[-1]], [budgets[metric]["value"]], "*", ms=12, color="green", label="deployed")
        ax.set(title=f"deployed {metric}", xlabel="epoch")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for metric in budgets:
        if f"lambda_{metric}" in rows[0]:
            ax.plot(epochs, [r[f"lambda_{metric}"] for r in rows], marker=marker, label=f"lambda {metric}")
    ax.set(title="Lagrange multipliers", xlabel="epoch")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    elif budgets:  # --budget-scope landing: the search ran without them
        ax.text(0.5, 0.5, "none: the budget acted\nat the landing only", ha="center", va="center",
                transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def edge_labels(count: int) -> list[str]:
    """Row names for a cell's edges: DARTS's 14 (node <- input) or NAS-Bench-201's 6 (j <- i)."""
    if count == 6:  # NB201: edges into nodes 1, 2, 3 in order
        return [f"{j} <- {i}" for j in range(1, 4) for i in range(j)]
    names, node = [], 0
    while len(names) < count:  # DARTS: node n takes every earlier node and both cell inputs
        names += [f"{node} <- {['c_k-2', 'c_k-1'][i] if i < 2 else i - 2}" for i in range(node + 2)]
        node += 1
    return names[:count]


def plot_alphas(history: list[dict[str, Any]], ops: tuple[str, ...], path: Path) -> None:
    """The final mixing weight of every op on every edge (one heatmap per cell type), strongest op in bold,
    and the share of parameter-free ops over the epochs (where collapse onto skip/pool shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not history:
        return
    names = list(history[-1]["alphas"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.6 * len(names) + 4, 0.36 * len(
        history[-1]["alphas"][names[0]]) + 2.2), squeeze=False, gridspec_kw={"width_ratios": [3] * len(names) + [2]})
    axes = axes[0]
    free = [o for o, op in enumerate(ops) if op in ("skip_connect", "max_pool_3x3", "avg_pool_3x3", "none")]
    for ax, key in zip(axes, names):
        weights = np.asarray(history[-1]["alphas"][key], dtype=float)
        low, high = float(weights.min()), float(weights.max())
        ax.imshow(weights, cmap="Blues", vmin=low, vmax=max(high, low + 1e-9), aspect="auto")  # contrast: ranking
        for e, row in enumerate(weights):
            best = int(row.argmax())
            for o, w in enumerate(row):
                ax.text(o, e, f"{w:.2f}", ha="center", va="center", fontsize=6.5,
                        fontweight="bold" if o == best else "normal",
                        color="white" if w > low + 0.6 * (high - low) else "black")
        ax.set_xticks(range(len(ops)), [op.replace("_", " ") for op in ops], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(weights)), edge_labels(len(weights)), fontsize=7)
        ax.set_title(f"{key.replace('alpha_', '').replace('_', ' ')}: weights after epoch {history[-1]['epoch'] + 1}",
                     fontsize=9)
    ax = axes[-1]
    epochs = [h["epoch"] + 1 for h in history]
    for key in names:
        share = [float(np.asarray(h["alphas"][key], dtype=float)[:, free].sum(1).mean()) if free else 0.0
                 for h in history]
        ax.plot(epochs, share, marker="o" if len(epochs) <= 30 else None, label=key.replace("alpha_", ""))
    ax.set(title="weight on parameter-free ops", xlabel="epoch", ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


RERANK_ROWS = 10  # the alphas' first candidates the report lists (and the chosen one)


def settling_lines(settling: dict[str, Any]) -> list[str]:
    """The report's line on how the alphas' derived cell moved during the search (none without alpha steps)."""
    if not settling.get("alpha_steps"):
        return []
    moved = (f"; of its {settling['edges']} edges the last quarter moved {settling['late_edges_changed']} and did "
             f"not hold {settling['unsettled_edges']} fixed" if "unsettled_edges" in settling else "")
    return [f"The alphas' derived cell changed {settling['changes']:,} times over {settling['alpha_steps']:,} alpha "
            f"steps, {settling['late_changes']:,} of them in the last quarter, and was unchanged for the last "
            f"{settling['unchanged_for']:,}{moved}."]


def write_search_report(result: "SearchResult", config: "SearchConfig", table: SpaceCostTable,
                        history: list[dict[str, Any]], stopped_early: bool = False, extra: Sequence[str] = ()) -> None:
    """genotype.json/.txt, result.json, cell diagrams, plots and report.md (plus `extra` lines) in the run folder."""
    run_dir = Path(result.run_dir)
    g = result.genotype
    space = result.space
    write_json(run_dir / "genotype.json", space.to_dict(g))
    atomic_write_text(run_dir / "genotype.txt", space.to_text(g) + "\n")
    write_json(run_dir / "result.json", {**result.to_dict(), "flops_convention": FLOPS_CONVENTION,
                                         "config": config.to_dict()})
    space.write_diagrams(g, run_dir)
    if history and "metrics" in history[-1]:
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
        *settling_lines(result.settling),
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
        lines += [f"- {k}: {v}" for k, v in result.benchmark.items() if k != "against_random"] + [""]
        standing = against_random_line(result.benchmark)
        lines += [f"The found architecture {standing}.", ""] if standing else []
    if config.budget_scope == "landing" and result.budgets:
        lines += ["The budget acted at the landing only (`--budget-scope landing`): the search ran without it, and "
                  "the network is the alphas' best inside the budget. What the search itself derived: `"
                  + space.to_text(result.raw_genotype) + "`.", ""]
    lines += [f"Note: {note}." for note in result.notes] + ([""] if result.notes else [])
    if result.derivation:
        inputs = " and each node's inputs" if "edge_drops" in result.derivation else ""
        lines += [f"Derived by perturbation (`--derive-by perturbation`): on each edge the op{inputs} whose removal "
                  f"costs the supernet most accuracy on {result.derivation['images']} held-out images (the supernet "
                  f"scores {result.derivation['supernet_accuracy']:.1f} % on them; every drop is in result.json); "
                  f"repair and fill rank by those drops.", ""]
    if result.repairs:
        lines += ["The derived network exceeded a budget and was repaired (cheaper ops the alphas rank next):", ""]
        lines += [f"- {r}" for r in result.repairs] + ["", "Before repair: `" + space.to_text(result.raw_genotype)
                                                       + "`", ""]
    if result.fills:
        lines += ["Unused budget was spent on costlier convolutions the alphas rank next (--fill-budget):", ""]
        lines += [f"- {r}" for r in result.fills] + ["", "Before: `" + space.to_text(result.unfilled_genotype) + "`", ""]
    if result.rerank:
        proxy = result.rerank["proxy"]
        names = list(proxy_ranks(result.rerank["candidates"][0], proxy))  # the voters that voted
        proxies = [n for n in names if n != BUDGET_VOTER]
        shown = [c for c in result.rerank["candidates"] if c["alpha_rank"] <= RERANK_ROWS or c.get("chosen")]
        by = [f"the {' and '.join(proxies)} prox{'y' if len(proxies) == 1 else 'ies'} of each deployed network"] \
            if proxies else []
        by += ["the share of the budget each uses"] if BUDGET_VOTER in names else []
        lines += [f"The landing ranks the {len(result.rerank['candidates'])} architectures the alphas score highest "
                  f"by {' and by '.join(by) or 'nothing else (no budget to share)'} too, and takes the best sum of "
                  f"the ranks (--rerank {proxy}; all of them in result.json):", "",
                  "| alphas' rank | " + " | ".join(f"{n} rank" for n in names) + " | architecture | "
                  + " | ".join(f"{n} score" for n in names) + " |", "|---|" + "---|" * (2 * len(names) + 1)]
        for c in shown:
            ranks, scores = proxy_ranks(c, proxy), proxy_scores_of(c, proxy)
            lines.append(f"| {c['alpha_rank']} | " + " | ".join(str(ranks[n]) for n in names)
                         + f" | `{c['genotype']}`{' (chosen)' if c.get('chosen') else ''} | "
                         + " | ".join(f"{scores[n]:.2f}" for n in names) + " |")
        lines.append("")
    lines += [f"![{name}]({name}.png)\n" for name in ("search", "alphas") if (run_dir / f"{name}.png").is_file()]
    atomic_write_text(run_dir / "report.md", "\n".join(lines + list(extra)))


def against_random_line(benchmark: dict[str, Any]) -> str | None:
    """One sentence: how the found cell ranks among the cells a random pick inside the same budget band would get."""
    facts = benchmark.get("against_random")
    if not facts or not facts.get("beats_pct"):
        return None
    dataset = "cifar10" if "cifar10" in facts["beats_pct"] else next(iter(facts["beats_pct"]))
    low, high = facts["band"] or (None, None)
    where = ("the none-free cells" if low is None
             else f"the none-free cells using {100 * low:.0f}-{100 * high:.0f} % of every budget")
    return (f"beats {facts['beats_pct'][dataset]:.1f} % of {where} ({facts['cells']:,}; {dataset} test accuracy of a "
            f"random one {facts['random_mean'][dataset]:.2f} % on average, the best {facts['best'][dataset]:.2f} %)")
