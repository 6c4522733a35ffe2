"""What the search loop needs from a search space; each space implements it once (DARTS, NAS-Bench-201)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from torch import nn

if TYPE_CHECKING:
    from ..constraint import Budget
    from ..landing import ChangeLister
    from ..search_config import SearchConfig


@runtime_checkable
class SpaceCostTable(Protocol):
    """What the constraint, landing and reports need from a space's cost table (DARTS `CostTable`,
    `NB201CostTable`): exact costs of a genotype, the range of costs, and per-op costs for the gradient."""

    entries: dict[str, Any]  # metric -> the per-op cost array the alpha costs are summed from
    fixed: dict[str, float]  # metric -> cost of what no alpha chooses (stem, classifier, ...)
    ops: tuple[str, ...]  # op names, in the alphas' column order

    def bounds(self, metric: str) -> tuple[float, float]:
        """Smallest and largest whole-network cost a derived genotype can have."""
        ...

    def genotype_cost(self, genotype: Any) -> dict[str, float]:
        """Exact whole-network cost of `genotype`, per metric (measured where the table holds measurements)."""
        ...

    def alpha_costs(self, metric: str) -> list[Any]:
        """One [edges, ops] cost array per tensor of the supernet's `arch_parameters()`."""
        ...

    def kept_edges(self, genotype: Any) -> list[Any]:
        """One 0/1 vector per alpha tensor: the supernet edges `genotype` keeps."""
        ...


class SearchSpace(ABC):
    """A search space as `run_search` sees it: settings, cost tables, supernet, repair, reporting.

    Cost tables follow `SpaceCostTable`. A supernet must offer
    `arch_parameters()`, `weight_parameters()`, `derive()`, `update_derived()` and `genotype`.
    """

    name: str = ""
    alpha_names: tuple[str, ...] = ("alpha",)
    fills_by_default: bool = False  # whether --fill-budget is on unless the user says otherwise
    reranks_by_default: str = "none"  # the proxy --rerank uses unless the user says otherwise ("none": off)
    chooses_inputs: bool = False  # whether each node keeps only some of its incoming edges (DARTS: two)
    has_benchmark: bool = False  # whether a benchmark table gives its true accuracies and device latencies

    @property
    def can_rerank(self) -> bool:
        """Whether the landing can list the alphas' top genotypes in the budget (what --rerank chooses among)."""
        return type(self).landing_candidates is not SearchSpace.landing_candidates

    @abstractmethod
    def eval_setting(self, config: "SearchConfig", in_channels: int, num_classes: int, image_size: int) -> Any:
        """The deployed network the budgets are about."""

    @abstractmethod
    def cost_table(self, setting: Any, config: "SearchConfig") -> SpaceCostTable:
        """Exact per-op costs of `setting` (params, FLOPs, and latency when the config asks for it)."""

    @abstractmethod
    def build_supernet(self, config: "SearchConfig", in_channels: int, num_classes: int) -> nn.Module:
        """The search supernet."""

    @abstractmethod
    def derive(self, alphas: list, config: "SearchConfig", edge_strength: list | None = None) -> Any:
        """The discrete genotype that ranking logits `alphas` (one tensor per `alpha_names`) give, as the
        supernet's own derive() does: what several searches' averaged weights are turned into. Where nodes
        choose their inputs, `edge_strength` (one [edges] tensor per alpha) ranks them instead of the logits."""

    @abstractmethod
    def op_changes(self, alphas: list) -> "ChangeLister":
        """Lister of every single-op change of a genotype (never to `none`), each ranked by `alphas`."""

    def repair(self, genotype: Any, alphas: list, table: Any, budgets: list["Budget"]) -> tuple[Any, list[str]]:
        """A genotype within every budget, changing as little as the alphas allow, and what changed."""
        from ..landing import repair

        return repair(genotype, self.op_changes(alphas), table, budgets)

    def fill(self, genotype: Any, alphas: list, table: Any, budgets: list["Budget"]) -> tuple[Any, list[str]]:
        """Spend unused budget on costlier convolutions the alphas rank next; the genotype and what changed."""
        from ..landing import fill

        return fill(genotype, self.op_changes(alphas), table, budgets)

    def landing_candidates(self, alphas: list, table: Any, budgets: list["Budget"], top: int,
                           fill: bool, whole_band: bool = False) -> list[Any]:
        """The `top` genotypes the alphas score highest among those the landing may choose (with `whole_band`,
        anywhere in the landing's widest band), best first."""
        raise NotImplementedError(f"the {self.name} space cannot list its landing candidates")

    def build_network(self, genotype: Any, setting: Any) -> nn.Module:
        """The deployed network of `genotype` (freshly initialised from torch's global RNG)."""
        raise NotImplementedError(f"the {self.name} space does not build deployed networks here")

    @abstractmethod
    def to_text(self, genotype: Any) -> str:
        """The space's own text form of a genotype."""

    @abstractmethod
    def to_dict(self, genotype: Any) -> dict:
        """JSON-ready form of a genotype."""

    @abstractmethod
    def cell_edges(self, genotype: Any) -> list[tuple]:
        """The genotype's edges, each (where it goes, where from, op): two genotypes differ by the edges not shared."""

    @abstractmethod
    def deployed_cost(self, genotype: Any, setting: Any) -> dict[str, int]:
        """params and flops counted on the built deployed network (not from the table)."""

    def suggest(self, table: Any, budget: "Budget") -> str:
        """How to make an out-of-range budget reachable (shown in the refusal)."""
        return "change the budget or the evaluation network"

    def write_diagrams(self, genotype: Any, run_dir: Path) -> None:
        """Cell diagrams in the run folder, if the space has them."""

    def describe(self, genotype: Any, config: "SearchConfig | None" = None, cost_table: Any = None,
                 budgets: Sequence[Any] = ()) -> dict[str, Any]:
        """Extra facts for the report (e.g. benchmark accuracies, against the cells `budgets` allow); empty by default."""
        return {}
