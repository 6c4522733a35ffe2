"""The DARTS space as the search loop sees it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from ..base import SearchSpace
from .genotype import Genotype, genotype_to_dict, genotype_to_text

if TYPE_CHECKING:
    from ...constraint import Budget
    from ...landing import ChangeLister
    from ...search_config import SearchConfig


class DartsSpace(SearchSpace):
    """DARTS cells (8 ops, 14 edges, normal + reduction alphas) in CIFAR/ImageNet evaluation networks."""

    name = "darts"
    alpha_names = ("alpha_normal", "alpha_reduce")
    chooses_inputs = True  # two inputs per node

    def eval_setting(self, config: "SearchConfig", in_channels: int, num_classes: int, image_size: int) -> Any:
        from ...constraint import auto_channels
        from ...errors import ConfigError
        from .network import eval_setting_for

        base = eval_setting_for(config.dataset, cells=config.eval_cells, num_classes=num_classes,
                                in_channels=in_channels, image_size=image_size, auxiliary=config.eval_auxiliary)
        channels = config.eval_channels
        if channels == "auto":
            if not config.budgets():
                raise ConfigError("--channels auto picks a width for a budget; give --max-params/--max-flops too")
            channels = auto_channels(lambda c: self.cost_table(base.replace(channels=c), config), config.budgets())
        return base.replace(channels=int(channels)) if channels is not None else base

    def cost_table(self, setting: Any, config: "SearchConfig") -> Any:
        from .cost import build_cost_table

        table = build_cost_table(setting, memory_dtype=config.memory_dtype())
        if config.latency_table:
            from .latency import attach_latency_table

            attach_latency_table(table, config.latency_table)
        return table

    def build_supernet(self, config: "SearchConfig", in_channels: int, num_classes: int) -> nn.Module:
        from .supernet import Supernet, SupernetConfig, fixed_reduce_cell

        fixed = fixed_reduce_cell(config.reduce_cell) if config.reduce_cell is not None else None
        return Supernet(SupernetConfig(cells=config.cells, channels=config.channels, num_classes=num_classes,
                                       in_channels=in_channels, bottleneck=config.bottleneck,
                                       weight_sharing=config.weight_sharing, derived_cells=config.derived_cells,
                                       max_skips=config.max_skips, fixed_reduce=fixed, remedy=config.remedy,
                                       stem=config.search_stem or "cifar"))

    def derive(self, alphas: list, config: "SearchConfig", edge_strength: list | None = None) -> Genotype:
        from .supernet import derive_genotype

        normal, reduce = alphas
        return derive_genotype(normal, reduce, max_skips=config.max_skips,
                               edge_strength=tuple(edge_strength) if edge_strength is not None else None)

    def op_changes(self, alphas: list) -> "ChangeLister":
        import torch.nn.functional as F

        from ...landing import OpChange
        from .ops import PARAMETRIC, PRIMITIVES
        from .supernet import edge_sources

        weights = [F.softmax(torch.as_tensor(a).detach().float().cpu(), -1).numpy() for a in alphas]

        def changes(genotype: Genotype) -> Iterator[OpChange]:
            order = edge_sources(len(genotype.normal) // 2)
            for cell, w in (("normal", weights[0]), ("reduce", weights[1])):
                edges = getattr(genotype, cell)
                for pos, (op, i) in enumerate(edges):
                    row, o = order.index((i, 2 + pos // 2)), PRIMITIVES.index(op)
                    for o2, name in enumerate(PRIMITIVES):
                        if name == "none" or o2 == o or w[row, o2] == 0.0:  # probability 0: pinned (--reduce-cell)
                            continue
                        new_edges = [*edges[:pos], (name, i), *edges[pos + 1:]]
                        yield OpChange(genotype._replace(**{cell: new_edges}),
                                       f"{cell} node {2 + pos // 2}: {op} from node {i} -> {name}",
                                       float(w[row, o] - w[row, o2]), name in PARAMETRIC)

        return changes

    def landing_candidates(self, alphas: list, table: Any, budgets: list["Budget"], top: int,
                           fill: bool, whole_band: bool = False) -> list[Genotype]:
        """The `top` genotypes the alphas score highest that use LANDING_BAND..100 % of every additive budget with
        the fill (anywhere within budget without it, or when that band holds none; any genotype without a budget),
        best first: a beam over the node choices (candidates.py). The band is always the whole one, so
        `whole_band` changes nothing here (NB201 first looks in the top of the budget)."""
        from ...errors import BudgetError
        from ...landing import LANDING_BAND
        from .candidates import top_genotypes

        found = top_genotypes(alphas, table, budgets, top, LANDING_BAND) if fill and budgets else []
        found = found or top_genotypes(alphas, table, budgets, top)
        if not found:
            raise BudgetError("no genotype the landing can list meets every budget; raise one of them")
        return found

    def build_network(self, genotype: Genotype, setting: Any) -> nn.Module:
        from .network import build_network

        return build_network(genotype, setting.replace(auxiliary=False))  # scored as deployed: no training head

    def to_text(self, genotype: Genotype) -> str:
        return genotype_to_text(genotype)

    def to_dict(self, genotype: Genotype) -> dict:
        return genotype_to_dict(genotype)

    def cell_edges(self, genotype: Genotype) -> list[tuple]:
        # edges k and k+1 feed node k // 2 + 2 (nodes 0 and 1 are the cell's inputs)
        return [(f"{kind} {k // 2 + 2}", src, op) for kind in ("normal", "reduce")
                for k, (op, src) in enumerate(getattr(genotype, kind))]

    def deployed_cost(self, genotype: Genotype, setting: Any) -> dict[str, int]:
        from .cost import network_cost

        cost = network_cost(genotype, setting)
        return {"params": cost.params, "flops": cost.flops, "params_with_aux": cost.params_with_aux}

    def suggest(self, table: Any, budget: "Budget") -> str:
        """Name the DARTS widths (and depths) whose range contains the budget."""
        from ...constraint import reachable_text, settings_reaching
        from .cost import build_cost_table

        s = table.setting

        def build(setting: Any) -> Any:
            return build_cost_table(setting, memory_dtype=table.memory_dtype)

        if budget.metric not in build(s).entries:
            return "try another evaluation setting"
        fits: list[str] = []
        for cells in [s.cells] + [c for c in (20, 14, 8, 5) if c != s.cells]:
            widths = [c for c in (4, 8, 12, 16, 20, 24, 28, 32, 36, 48, 64, 96) if cells == s.cells or c <= s.channels]
            fits = settings_reaching(((f"--cells {cells} --channels {c}",
                                       lambda cells=cells, c=c: build(s.replace(cells=cells, channels=c)))
                                      for c in widths), budget)
            if fits:
                break
        return reachable_text(fits, "no width up to 96 channels at 5-20 cells reaches it; change the budget")

    def write_diagrams(self, genotype: Genotype, run_dir: Path) -> None:
        """The normal and reduction cells (inputs c_{k-2}, c_{k-1}, nodes 0.., output c_{k}) as .dot and picture."""
        from ...report import write_cell

        for name, edges, concat in (("normal", genotype.normal, genotype.normal_concat),
                                    ("reduce", genotype.reduce, genotype.reduce_concat)):
            label = {0: "c_{k-2}", 1: "c_{k-1}"}
            named = [(op, label.get(i, str(i - 2)), str(k // 2)) for k, (op, i) in enumerate(edges)]
            named += [("", str(j - 2), "c_{k}") for j in concat]
            nodes = ["c_{k-2}", "c_{k-1}", *[str(j) for j in range(len(edges) // 2)], "c_{k}"]
            write_cell(Path(run_dir) / f"cell_{name}.dot", named, nodes, f"{name} cell")
