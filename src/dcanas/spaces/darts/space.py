"""The DARTS space as the search loop sees it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..base import SearchSpace
from .genotype import Genotype, genotype_to_dict, genotype_to_text

if TYPE_CHECKING:
    from ...constraint import Budget
    from ...search_loop import SearchConfig


class DartsSpace(SearchSpace):
    """DARTS cells (8 ops, 14 edges, normal + reduction alphas) in CIFAR/ImageNet evaluation networks."""

    name = "darts"
    alpha_names = ("alpha_normal", "alpha_reduce")

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
        from ...cost import build_cost_table

        table = build_cost_table(setting)
        if config.latency_table:
            from ...latency import attach_latency_table

            attach_latency_table(table, config.latency_table)
        return table

    def build_supernet(self, config: "SearchConfig", in_channels: int, num_classes: int) -> nn.Module:
        from .supernet import Supernet, SupernetConfig

        return Supernet(SupernetConfig(cells=config.cells, channels=config.channels, num_classes=num_classes,
                                       in_channels=in_channels, bottleneck=config.bottleneck,
                                       weight_sharing=config.weight_sharing, derived_cells=config.derived_cells,
                                       max_skips=config.max_skips, remedy=config.remedy))

    def repair(self, genotype: Genotype, alphas: list, table: Any, budgets: list["Budget"]) -> tuple[Genotype, list[str]]:
        from ...constraint import repair_genotype

        return repair_genotype(genotype, alphas[0], alphas[1], table, budgets)

    def to_text(self, genotype: Genotype) -> str:
        return genotype_to_text(genotype)

    def to_dict(self, genotype: Genotype) -> dict:
        return genotype_to_dict(genotype)

    def deployed_cost(self, genotype: Genotype, setting: Any) -> dict[str, int]:
        from ...cost import network_cost

        cost = network_cost(genotype, setting)
        return {"params": cost.params, "flops": cost.flops, "params_with_aux": cost.params_with_aux}

    def suggest(self, table: Any, budget: "Budget") -> str:
        from ...constraint import suggest_setting

        return suggest_setting(table, budget)

    def write_diagrams(self, genotype: Genotype, run_dir: Path) -> None:
        from ...report import write_cell_diagrams

        write_cell_diagrams(genotype, run_dir)
