"""The NAS-Bench-201 space as the search loop sees it.

Meaning of the shared options in this space:

- ``--cells`` (eval_cells): searchable cells of the deployed network, 3 stages x N, so a multiple of
  3; default 15 (N = 5, the benchmark's network). ``--channels`` (eval_channels): C of the first
  stage, default 16 (the benchmark's), or ``auto`` for a params/FLOPs budget.
- ``--search-cells`` (cells): supernet cells, ceil(cells / 3) per stage (the default 8 gives 3).
- ``--latency-device`` (latency_device): a device of the benchmark table (pixel3, raspi4, ...).
  The table's measured latencies are what a latency budget is about: an architecture's cost, the
  budget range, the constraint's value and the repair all use the measurement of the derived
  architecture; the additive model fitted to that device (intercept + one coefficient per edge
  and op, R^2 0.95 for pixel3 over the none-free archs) only shapes the constraint's gradient.
  Latencies were measured on the benchmark's CIFAR-10 network, so a latency budget needs C = 16,
  N = 5 and 32x32 inputs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import BudgetError, ConfigError, DcanasError
from ...landing import LANDING_BAND, ChangeLister, OpChange, repair
from ..base import SearchSpace
from .arch import EDGES, NUM_ARCHS, NUM_EDGES, Arch, arch_from_enumeration, arch_to_index, format_arch, resolve_arch
from .ops import NONE_INDEX, PARAMETRIC, PRIMITIVES

if TYPE_CHECKING:
    from ...constraint import Budget
    from ...search_config import SearchConfig
    from .cost import NB201CostTable
    from .network import NB201Setting

BENCH_CELLS_PER_STAGE = 5
BENCH_CHANNELS = 16


# The exact fill's band floors, tightest first (measured on the NB201 yardstick: BENCHMARKS.md §12)
FILL_FLOORS = (0.95, 0.90, LANDING_BAND)
# A tighter band is only taken when it holds this many architectures: fewer leave --rerank nearly nothing to
# choose from (at 700K parameters the 95-100 % band holds 15, its best 1.02 points under the best in budget).
MIN_BAND_SIZE = 20


class NB201Space(SearchSpace):
    """NAS-Bench-201 cells (5 ops, 6 edges, one alpha shared by every cell) in the benchmark's network."""

    name = "nb201"
    alpha_names = ("alpha",)
    fills_by_default = True  # measured on the NB201 yardstick: BENCHMARKS.md §12
    reranks_by_default = "synflow+meco+budget"  # likewise
    has_benchmark = True  # --bench-table, --latency-device

    # -- settings and tables ----------------------------------------------------------------

    def eval_setting(self, config: SearchConfig, in_channels: int, num_classes: int,
                     image_size: int) -> NB201Setting:
        from .network import NB201Setting

        cells = config.eval_cells
        if cells is None:
            per_stage = BENCH_CELLS_PER_STAGE
        elif cells < 3 or cells % 3:
            raise ConfigError(f"an NB201 network has 3 stages of N cells: --cells must be a multiple of 3 "
                              f"(15 = the benchmark's N=5), not {cells}")
        else:
            per_stage = cells // 3
        base = NB201Setting(channels=BENCH_CHANNELS, cells_per_stage=per_stage, num_classes=num_classes,
                            in_channels=in_channels, image_size=image_size)
        channels = config.eval_channels
        if channels == "auto":
            from ...constraint import auto_channels

            budgets = config.budgets()
            if not budgets:
                raise ConfigError("--channels auto picks a width for a budget; give --max-params/--max-flops too")
            if any(b.metric == "latency" for b in budgets):
                raise ConfigError("--channels auto cannot go with an NB201 latency budget: latencies were "
                                  "measured at the benchmark's 16 channels")
            from .cost import build_nb201_cost_table

            channels = auto_channels(lambda c: build_nb201_cost_table(base.replace(channels=c)), budgets)
        return base.replace(channels=int(channels)) if channels is not None else base

    def cost_table(self, setting: NB201Setting, config: SearchConfig) -> NB201CostTable:
        device = getattr(config, "latency_device", None)
        bench = getattr(config, "bench_table", None)
        if getattr(config, "latency_table", None):
            raise ConfigError("--latency-table holds per-op latencies of DARTS networks; NB201 latencies come "
                              "from the benchmark table: pass --latency-device (e.g. pixel3, raspi4)")
        if device:
            from .bench import latency_cost_table, load_any_table

            return latency_cost_table(device, load_any_table(bench), setting=setting, exclude_none=True,
                                      measured=True)
        if getattr(config, "max_latency", None) is not None:
            raise ConfigError("an NB201 latency budget is about a device the benchmark measured: pass "
                              "--latency-device (pixel3, raspi4, ...; `dcanas nb201 latency-fit` lists them)")
        from .cost import build_nb201_cost_table

        return build_nb201_cost_table(setting)

    def build_supernet(self, config: SearchConfig, in_channels: int, num_classes: int) -> nn.Module:
        from .supernet import NB201Supernet, NB201SupernetConfig

        return NB201Supernet(NB201SupernetConfig(
            channels=config.channels, cells_per_stage=max(1, math.ceil(config.cells / 3)), num_classes=num_classes,
            in_channels=in_channels, bottleneck=config.bottleneck, weight_sharing=config.weight_sharing,
            derived_cells=config.derived_cells, remedy=config.remedy,
            partial_channels=getattr(config, "partial_channels", 1), edge_norm=getattr(config, "edge_norm", False)))

    def derive(self, alphas: list, config: SearchConfig, edge_strength: list | None = None) -> Arch:
        from .supernet import derive_arch

        return derive_arch(alphas[0])  # as the supernet: `none` is never derived; every edge is kept

    # -- repair -----------------------------------------------------------------------------

    def op_changes(self, alphas: list) -> ChangeLister:
        alpha = alphas[0] if isinstance(alphas, (list, tuple)) else alphas
        weights = F.softmax(torch.as_tensor(alpha).detach().float().cpu(), -1).numpy()

        def changes(genotype: Arch) -> Iterator[OpChange]:
            arch = resolve_arch(genotype)
            for e, o in enumerate(arch.op_indices):
                (i, j), old = EDGES[e], arch.ops[e]
                for o2, name in enumerate(PRIMITIVES):
                    if o2 not in (o, NONE_INDEX):
                        yield OpChange(_with_op(arch, e, o2), f"edge {j}<-{i}: {old} -> {name}",
                                       float(weights[e, o] - weights[e, o2]), name in PARAMETRIC)

        return changes

    def repair(self, genotype: Arch, alphas: list, table: NB201CostTable,
               budgets: list[Budget]) -> tuple[Arch, list[str]]:
        """The shared repair (`landing.repair`), with the exact way out this small space allows.

        Measured latencies are not additive: if no single change helps (or the greedy walk would
        cycle), the architecture with the highest alpha score among all that meet every budget is
        taken instead.
        """
        arch = resolve_arch(genotype)
        logp = _log_weights(alphas)
        return repair(arch, self.op_changes(alphas), table, budgets,
                      fallback=lambda: self._best_within(arch, logp, table, budgets))

    def fill(self, genotype: Arch, alphas: list, table: NB201CostTable,
             budgets: list[Budget]) -> tuple[Arch, list[str]]:
        """Exact in this small space: of all 15,625 architectures, the none-free one the alphas score highest
        (sum of log softmax) that uses FILL_FLOORS[0]..100 % of every budget, or, where that band holds fewer
        than MIN_BAND_SIZE, the next floor's band, down to LANDING_BAND; the greedy fill where no band holds one.

        The greedy walk stops at the first local optimum (it only upgrades, one edge at a time); the exact
        choice may also trade a costlier op on one edge for a cheaper one on another. Looking in the top of
        the budget first spends what the search left unused: on NB201 it lifted the worst landings most.
        """
        arch = resolve_arch(genotype)
        logp = _log_weights(alphas)
        found = _top_in_band(logp, table, budgets, 1)
        if not found:
            return super().fill(arch, alphas, table, budgets)
        best = found[0]
        if best == arch:
            return arch, []
        return best, [f"edge {j}<-{i}: {a} -> {b} (unused budget)" for (i, j), a, b in zip(EDGES, arch.ops, best.ops)
                      if a != b]

    def landing_candidates(self, alphas: list, table: NB201CostTable, budgets: list[Budget], top: int,
                           fill: bool, whole_band: bool = False) -> list[Arch]:
        """The `top` architectures the alphas score highest in the band the fill chooses from (with `whole_band`,
        anywhere in LANDING_BAND..100 %; anywhere within budget without the fill; any none-free architecture
        without a budget), best first."""
        logp = _log_weights(alphas)
        floors = (LANDING_BAND,) if whole_band else FILL_FLOORS
        return (_top_in_band(logp, table, budgets, top, floors) if fill and budgets else []) or \
            _top_scored(logp, _band_mask(table, budgets, 0.0), top)

    def build_network(self, genotype: Arch, setting: NB201Setting) -> nn.Module:
        from .network import NB201Network

        return NB201Network(resolve_arch(genotype), setting)

    def _best_within(self, arch: Arch, logp: np.ndarray, table: NB201CostTable,
                     budgets: list[Budget]) -> tuple[Arch, list[str]]:
        """The none-free architecture with the highest sum of log softmax(alpha) that meets every budget."""
        best = _best_scored(logp, table, budgets)
        if best is None:
            raise BudgetError("no NB201 architecture meets every budget; raise one of them")
        changes = [f"edge {j}<-{i}: {a} -> {b}" for (i, j), a, b in zip(EDGES, arch.ops, best.ops) if a != b]
        return best, changes + ["(no single-edge change helped: took the best-scored architecture within budget)"]

    # -- reporting --------------------------------------------------------------------------

    def to_text(self, genotype: Arch) -> str:
        return format_arch(resolve_arch(genotype))

    def to_dict(self, genotype: Arch) -> dict:
        arch = resolve_arch(genotype)
        return {"arch": format_arch(arch), "index": arch_to_index(arch),
                "edges": {f"{j}<-{i}": op for op, i, j in arch.edges()}}

    def cell_edges(self, genotype: Arch) -> list[tuple]:
        return [(j, i, op) for op, i, j in resolve_arch(genotype).edges()]

    def deployed_cost(self, genotype: Arch, setting: NB201Setting) -> dict[str, int]:
        from .cost import nb201_cost

        cost = nb201_cost(resolve_arch(genotype), setting)
        return {"params": cost.params, "flops": cost.flops, "flops_nb201": cost.flops_nb201}

    def suggest(self, table: NB201CostTable, budget: Budget) -> str:
        if budget.metric == "latency":
            return ("that range is the benchmark's measured latencies on this device over the architectures "
                    "without `none`; pick a budget inside it, or another --latency-device")
        from ...constraint import reachable_text, settings_reaching
        from .cost import build_nb201_cost_table

        s = table.setting
        fits = settings_reaching(((f"--channels {c}", lambda c=c: build_nb201_cost_table(s.replace(channels=c)))
                                  for c in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128)), budget)
        return reachable_text(fits, "no width from 4 to 128 channels reaches it; change the budget or --cells")

    def write_diagrams(self, genotype: Arch, run_dir: Path) -> None:
        from ...report import write_cell

        names = {0: "in", 3: "out"}
        edges = [(op, names.get(i, str(i)), names.get(j, str(j))) for op, i, j in resolve_arch(genotype).edges()
                 if op != "none"]
        write_cell(Path(run_dir) / "cell.dot", edges, ["in", "1", "2", "out"], "NAS-Bench-201 cell")

    def describe(self, genotype: Arch, config: SearchConfig | None = None, cost_table: NB201CostTable | None = None,
                 budgets: Sequence[Budget] = ()) -> dict[str, Any]:
        """The benchmark's true test accuracies (and measured latency on the search's device), and how they rank
        among the cells the landing could have returned (85-100 % of every budget; all none-free cells without
        one); {} without a table."""
        try:
            from .bench import load_any_table, standing_in

            table = load_any_table(getattr(config, "bench_table", None))
            device = getattr(config, "latency_device", None)
            arch = resolve_arch(genotype)
            found = table.lookup(arch, [device] if device in table.latency else [])
        except DcanasError:  # a missing or damaged table: the report goes without the benchmark's facts
            return {}
        facts = {"nb201_index": found["index"], "test_accuracy": found["test_accuracy"],
                 "latency_ms": found["latency_ms"], "bench_table": table.source}
        if cost_table is not None or not budgets:
            low = LANDING_BAND if budgets else 0.0
            band = _band_mask(cost_table, list(budgets), low)
            facts["against_random"] = {"band": [low, 1.0] if budgets else None, **standing_in(table, arch, band)}
        return facts


def _with_op(arch: Arch, edge: int, op_index: int) -> Arch:
    picks = list(arch.op_indices)
    picks[edge] = op_index
    return Arch.from_indices(picks)


def _log_weights(alphas: list) -> np.ndarray:
    """[6, 5] log softmax of the (one) alpha tensor."""
    alpha = alphas[0] if isinstance(alphas, (list, tuple)) else alphas
    return F.log_softmax(torch.as_tensor(alpha).detach().float().cpu(), -1).numpy()


def _best_scored(logp: np.ndarray, table: NB201CostTable, budgets: list[Budget], low: float = 0.0) -> Arch | None:
    """Of all none-free architectures costing low..1 x every budget, the one with the highest sum of
    log softmax(alpha); None when there is none."""
    found = _top_scored(logp, _band_mask(table, budgets, low), 1)
    return found[0] if found else None


def _top_in_band(logp: np.ndarray, table: NB201CostTable, budgets: list[Budget], top: int,
                 floors: tuple[float, ...] = FILL_FLOORS) -> list[Arch]:
    """`_top_scored` in the tightest of `floors`' bands that holds MIN_BAND_SIZE architectures, else in the
    widest (the bands nest, so it holds any there are); [] when none does."""
    bands = [_band_mask(table, budgets, floor) for floor in floors]
    return _top_scored(logp, next((ok for ok in bands if ok.sum() >= MIN_BAND_SIZE), bands[-1]), top)


def _band_mask(table: NB201CostTable, budgets: list[Budget], low: float) -> np.ndarray:
    """[15,625] bool: the none-free architectures costing low..1 x every budget (enumeration order)."""
    ok = (_enumeration_digits() != NONE_INDEX).all(axis=1)
    for b in budgets:
        costs = _enumeration_costs(table, b.metric)
        ok &= (costs <= b.limit) & (costs >= low * b.limit)
    return ok


def _top_scored(logp: np.ndarray, ok: np.ndarray, top: int) -> list[Arch]:
    """The `top` architectures of mask `ok` with the highest sum of log softmax(alpha), best first (ties: lower
    enumeration number first); [] when `ok` holds none."""
    if not ok.any():
        return []
    score = np.where(ok, logp[np.arange(NUM_EDGES)[None, :], _enumeration_digits()].sum(axis=1), -np.inf)
    order = np.argsort(-score, kind="stable")[:min(top, int(ok.sum()))]
    return [arch_from_enumeration(int(n)) for n in order]


def _enumeration_digits() -> np.ndarray:
    """[15,625, 6]: the op index on each edge of every architecture, in enumeration order."""
    n = np.arange(NUM_ARCHS)[:, None]
    return n // len(PRIMITIVES) ** np.arange(NUM_EDGES - 1, -1, -1)[None, :] % len(PRIMITIVES)


def _enumeration_costs(table: NB201CostTable, metric: str) -> np.ndarray:
    """Every architecture's cost (enumeration order) as genotype_cost gives it: measured where attached."""
    costs = table.all_arch_costs(metric, _enumeration_digits())
    measured = table.measured.get(metric) if hasattr(table, "measured") else None
    if measured is not None:
        costs = np.where(np.isfinite(measured), measured, costs)
    return costs
