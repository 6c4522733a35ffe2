"""The differentiable device constraint: k_s(alpha), one Lagrange multiplier per budget, its update.

Two estimates of the deployed cost are offered:

- ``paper``: DCA-NAS eq. 3, the softmax-weighted cost of every edge and op. It differs from the
  size of the discretised network (all 14 edges count, `none` dilutes), hence the look-up graph.
- ``derived`` (default): a straight-through estimate whose *value* is the exact cost of the
  genotype the alphas currently derive, and whose *gradient* is that of the softmax-weighted cost
  of the edges that genotype keeps (non-`none` ops renormalised). The multiplier then reacts to the
  true violation of the network that will be deployed, so a search lands near its budget without a
  look-up graph.

Peak activation memory (`--max-memory`) is a maximum over the network's cells, not a sum. In ``derived``
mode its value is the exact peak of the derived network, and its gradient is that of a smooth maximum: each
cell's kept edges pull with the memory their ops allocate, weighted by a softmax over the cells' peaks
(`CostTable.peak_alpha_costs`), so only the cells at or near the peak are pushed. The ``paper`` estimate
(for the look-up graph) starts from the smallest peak and adds the expected op memory of the heaviest cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BudgetError
from .spaces.base import SpaceCostTable
from .units import readable

CONSTRAINT_MODES = ("derived", "paper")
CONSTRAINT_SCOPES = ("all", "parametric")  # which ops the budget's gradient may favour during the search
# "landing": no budget term in the search at all; the space lands the searched alphas in each budget afterwards
# (only where it can list every architecture in a budget: nb201). One search then serves any budget.
BUDGET_SCOPES = CONSTRAINT_SCOPES + ("landing",)
UNITS = {"params": "parameters", "flops": "MACs", "latency": "ms", "memory": "bytes"}
COUNTED = ("params", "flops")  # exact counts at any width (latency is measured, memory a peak)
PEAK_METRICS = ("memory",)  # a maximum over the network, not a sum: the table gives its gradient per genotype


@dataclass(frozen=True)
class Budget:
    """An upper limit on one metric of the deployed network."""

    metric: str
    limit: float
    asked: str | None = None  # how the user put it, when not as --max-<metric> (e.g. --max-model-bytes)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"metric": self.metric, "limit": self.limit}


def check_budgets(table: SpaceCostTable, budgets: list[Budget], suggest: Callable[[Any, Budget], str]) -> None:
    """Refuse, before any search, a budget outside what the evaluation setting can give.

    `suggest(table, budget)` says how to make the budget reachable (the space's `suggest`).
    """
    for b in budgets:
        if b.metric not in table.entries:
            raise BudgetError(f"no {b.metric} table for this evaluation network; "
                              f"measure one with `dcanas profile --ops` and pass --latency-table")
        low, high = table.bounds(b.metric)
        if not low <= b.limit <= high:
            s = table.setting
            where = "below the smallest" if b.limit < low else "above the largest"
            raise BudgetError(
                f"{b.asked or f'--max-{b.metric} {readable(b.limit)}'} is {where} network this space gives at {s.cells} cells x "
                f"{s.channels} channels ({readable(low)} .. {readable(high)} {UNITS.get(b.metric, '')}); "
                f"{suggest(table, b)}")


def settings_reaching(candidates: Iterable[tuple[str, Callable[[], Any]]], budget: Budget) -> list[str]:
    """Labels of the candidate settings (label, cost-table builder) whose cost range holds `budget`."""
    fits = []
    for label, build in candidates:
        low, high = build().bounds(budget.metric)
        if low <= budget.limit <= high:
            fits.append(label)
    return fits


def reachable_text(fits: list[str], nothing: str) -> str:
    """The refusal's suggestion: the last three settings that reach the budget, or what to do instead."""
    return "reachable with " + " or ".join(fits[-3:]) + " (or --channels auto)" if fits else nothing


def auto_channels(table_for: Callable[[int], SpaceCostTable], budgets: list[Budget]) -> int:
    """The widest even width whose range puts every budget at least 30% of the way above its floor."""
    best = None
    for channels in range(4, 258, 2):
        table = table_for(channels)
        marks = [table.bounds(b.metric) for b in budgets]
        if all(low + 0.3 * (high - low) <= b.limit for b, (low, high) in zip(budgets, marks)):
            best = channels
        else:
            break  # floors only grow with width
    if best is None:
        raise BudgetError("even 4 channels cannot hold this budget; raise it or lower --cells")
    return best


class Constraint:
    """k_s(alpha) for each budget, the multipliers lambda, and the penalty added to the alpha loss.

    `table` is any search space's cost table offering `alpha_costs(metric)`, `kept_edges(genotype)`,
    `genotype_cost(genotype)`, `fixed` and `ops`; one entry of `alpha_costs` per alpha tensor.
    """

    def __init__(self, table: SpaceCostTable, budgets: list[Budget], mode: str = "derived", lambda_lr: float = 0.05,
                 device: torch.device | str = "cpu", floor: float | None = None, scope: str = "all"):
        if mode not in CONSTRAINT_MODES:
            raise ValueError(f"constraint mode must be one of {CONSTRAINT_MODES}")
        if scope not in CONSTRAINT_SCOPES:
            raise ValueError(f"a constraint's scope must be one of {CONSTRAINT_SCOPES}")
        self.table = table
        self.budgets = budgets
        self.mode = mode
        self.lambda_lr = lambda_lr
        self.lambdas = torch.zeros(len(budgets), dtype=torch.float64)
        # the lower side of the band: unused budget is lost accuracy, so a second multiplier per budget
        # (mu >= 0) pushes towards costlier ops while k/K < floor, exactly as lambda pushes down above 1
        self.floor = floor
        self.mus = torch.zeros(len(budgets), dtype=torch.float64)
        self.none_index = list(table.ops).index("none") if "none" in table.ops else None
        # per budget, per alpha tensor: [edges, ops] costs summed over the deployed cells it describes
        self._costs = [[torch.tensor(c, dtype=torch.float32, device=device) for c in table.alpha_costs(b.metric)]
                       for b in budgets]
        self._fixed = [float(table.fixed[b.metric]) for b in budgets]
        # scope "parametric": the budget's gradient may only move weight between ops with weights (towards
        # cheaper convolutions), not onto parameter-free ones, unless even the cheapest parametric op on every
        # kept edge breaks the budget. Per alpha tensor, [edges, ops]: where the op has weights on that edge
        # (a stride-2 skip is a FactorizedReduce, which has)
        self.scope = scope
        self._parametric = [torch.tensor(c > 0, device=device) for c in table.alpha_costs("params")]

    def expected_costs(self, alphas: list[torch.Tensor], genotype: Any) -> list[torch.Tensor]:
        """The differentiable estimate of each budget's metric for the deployed network."""
        if self.mode == "paper":
            probs = [F.softmax(a, -1) for a in alphas]
            return [f + sum((p * c).sum() for p, c in zip(probs, costs))
                    for f, costs in zip(self._fixed, self._costs)]
        kept = [torch.tensor(m, dtype=torch.float32, device=alphas[0].device)[:, None]
                for m in self.table.kept_edges(genotype)]
        probs = [_without(a, self.none_index) for a in alphas]
        exact = self.table.genotype_cost(genotype)
        result = []
        for b, f, costs in zip(self.budgets, self._fixed, self._costs):
            if b.metric in PEAK_METRICS:  # value exact, gradient from the smooth maximum over the cells
                costs = [torch.tensor(c, dtype=torch.float32, device=alphas[0].device)
                         for c in self.table.peak_alpha_costs(genotype)]
                soft = sum((m * p * c).sum() for m, p, c in zip(kept, probs, costs))
                result.append(soft + (exact[b.metric] - soft).detach())
                continue
            weights = probs
            if self.scope == "parametric" and cheapest_parametric_cost(self.table, genotype, b.metric) <= b.limit:
                weights = [_parametric_only(a, p, m) for a, p, m in zip(alphas, probs, self._parametric)]
            soft = f + sum((m * p * c).sum() for m, p, c in zip(kept, weights, costs))
            result.append(soft + (exact[b.metric] - soft).detach())  # value exact, gradient soft
        return result

    def violations(self, costs: list[torch.Tensor]) -> torch.Tensor:
        """Normalised violations k/K - 1 (positive = over budget), differentiable."""
        return torch.stack([c / b.limit - 1.0 for c, b in zip(costs, self.budgets)])

    def penalty(self, costs: list[torch.Tensor]) -> torch.Tensor:
        """sum_m lambda_m (k_m/K_m - 1) [+ mu_m (floor - k_m/K_m)]: the term added to the validation loss."""
        v = self.violations(costs)
        total = (self.lambdas.to(v) * v).sum()
        if self.floor is not None:
            total = total + (self.mus.to(v) * (self.floor - 1.0 - v)).sum()
        return total

    def update(self, costs: list[torch.Tensor]) -> None:
        """Projected gradient ascent on the multipliers: lambda <- max(0, lambda + lr * violation), and
        mu <- max(0, mu + lr * (floor - k/K)) for the band's lower side."""
        v = self.violations([c.detach() for c in costs]).double().cpu()
        self.lambdas = torch.clamp(self.lambdas + self.lambda_lr * v, min=0.0)
        if self.floor is not None:
            self.mus = torch.clamp(self.mus + self.lambda_lr * (self.floor - 1.0 - v), min=0.0)

    def state_dict(self) -> dict:
        """Multipliers, for checkpoints."""
        return {"lambdas": self.lambdas.clone(), "mus": self.mus.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the multipliers (checkpoints from before the lower side have no mu: zeros)."""
        self.lambdas = state["lambdas"].clone()
        self.mus = state.get("mus", torch.zeros_like(self.lambdas)).clone()


def _without(alpha: torch.Tensor, none_index: int | None) -> torch.Tensor:
    """Softmax over the ops discretisation can pick (all but `none`), zero for `none`."""
    if none_index is None:
        return F.softmax(alpha, dim=-1)
    masked = alpha.masked_fill(torch.arange(alpha.shape[-1], device=alpha.device) == none_index, float("-inf"))
    return F.softmax(masked, dim=-1)


def _parametric_only(alpha: torch.Tensor, probs: torch.Tensor, parametric: torch.Tensor) -> torch.Tensor:
    """`probs` with the same values, whose gradient moves weight only among each edge's parametric ops: the
    share of parametric ops on an edge, and the parameter-free ops' weights, are constants to the budget."""
    share = (probs * parametric).sum(-1, keepdim=True)
    # a large negative, not -inf: an edge without parametric ops gets a uniform (and unused) softmax, not NaN
    within = F.softmax(alpha.masked_fill(~parametric, -1e9), dim=-1) * parametric
    return torch.where(parametric, share.detach() * within, probs.detach())


def cheapest_parametric_cost(table: SpaceCostTable, genotype: Any, metric: str) -> float:
    """`metric` of `genotype`'s network with every kept edge at its cheapest op that has weights (an edge with
    none at its cheapest op): above a budget, the budget itself demands parameter-free ops on some edges."""
    total = float(table.fixed[metric])
    for kept, costs, params in zip(table.kept_edges(genotype), table.alpha_costs(metric), table.alpha_costs("params")):
        parametric = params > 0  # a stride-2 skip is a FactorizedReduce, which has weights
        per_edge = np.where(parametric, costs, np.inf).min(-1)
        per_edge = np.where(parametric.any(-1), per_edge, costs.min(-1))
        total += float((np.asarray(kept, dtype=float) * per_edge).sum())
    return total


NARROWER_TRIES = 4  # widths tried below the network's for the note's suggestion (a table build each, ~1-5 s)


def parameter_free_notes(table: SpaceCostTable, genotype: Any, budgets: list[Budget],
                         table_for: Callable[[int], SpaceCostTable] | None = None) -> list[str]:
    """One line per budget that cannot hold an op with weights on every kept edge of this network: why the
    derived cells hold pools and skips however the search went, and (given `table_for(width)`, counted metrics
    only) the widest of the next few narrower widths that would leave that choice to the search."""
    notes = []
    for b in budgets:
        if b.metric in PEAK_METRICS or b.metric not in table.fixed:
            continue
        cheapest = cheapest_parametric_cost(table, genotype, b.metric)
        if cheapest <= b.limit:
            continue
        width = table.setting.channels
        tries = range(width - 2, max(1, width - 2 * NARROWER_TRIES - 1), -2)
        narrower = next((c for c in tries if table_for is not None and b.metric in COUNTED
                         and cheapest_parametric_cost(table_for(c), genotype, b.metric) <= b.limit), None)
        asked = b.asked or f"--max-{b.metric} {readable(b.limit)}"
        room = (f"--channels {narrower}, or a budget of {readable(cheapest)} {b.metric},"
                if narrower else f"a budget of {readable(cheapest)} {b.metric} (or a narrower --channels)")
        notes.append(f"{asked} cannot hold an op with weights on every edge at {width} channels, so this network "
                     f"needs parameter-free ops (pools, skips) whatever the search prefers; {room} would leave that "
                     f"choice to the search")
    return notes


def budget_share(table: SpaceCostTable, genotype: Any, budgets: list[Budget]) -> float:
    """How much of its budgets `genotype` uses: the mean over budgets of cost / limit."""
    cost = table.genotype_cost(genotype)
    return sum(cost[b.metric] / b.limit for b in budgets) / len(budgets)


def cost_summary(table: SpaceCostTable, genotype: Any, budgets: list[Budget]) -> dict[str, dict]:
    """Per budget: the limit, the deployed value, and whether it holds."""
    cost = table.genotype_cost(genotype)
    return {b.metric: {"limit": b.limit, "value": cost[b.metric], "ok": bool(cost[b.metric] <= b.limit)}
            for b in budgets}

