"""Landing the derived network on its budgets: repair when it is over, fill when it leaves budget unused.

Both are greedy walks over the single-op changes a search space lists (`SearchSpace.op_changes`), scored
the same way in every space, with costs from the space's cost table (`table.genotype_cost`, so measured
latencies where the table holds them):

- **repair** (over budget): each step takes the change with the most budget saved on the violated budgets
  per unit of softmax(alpha) weight lost. A change to a parametric op (sep_conv_5x5 -> sep_conv_3x3,
  conv 3x3 -> conv 1x1) always goes before one to a parameter-free op (skip, pooling): turning
  convolutions into skips is what collapses a cell, so it happens only when no parametric change still
  saves budget. Then `give_back` undoes what the walk overdid (to parametric ops only).
- **fill** (budget unused, the mirror): each step takes the change to a costlier parametric op that keeps
  every budget and gains the most budget use per unit of alpha weight lost; unused budget is lost
  accuracy, and the multiplier's push towards cheap ops leaves a constrained search's alphas biased
  below the budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .errors import BudgetError

if TYPE_CHECKING:
    from .constraint import Budget


@dataclass(frozen=True)
class OpChange:
    """One op replaced on one edge: the genotype it gives, and how the alphas rank the new op."""

    genotype: Any
    text: str  # e.g. "normal node 3: sep_conv_5x5 from node 1 -> sep_conv_3x3"
    alpha_loss: float  # softmax weight of the old op minus the new op's (> 0: down the alphas' ranking)
    parametric: bool  # the new op has weights


ChangeLister = Callable[[Any], Iterable[OpChange]]
# Where a derived network should land: between this fraction of each budget and the budget itself.
# Unused budget is lost accuracy; users asked for 85-100 % (issue 11), and NB201's exact fill aims there.
LANDING_BAND = 0.85
MIN_LOSS = 1e-9  # a change the alphas rank equal or higher costs "nothing": scored by its budget effect alone


def repair(genotype: Any, changes: ChangeLister, table: Any, budgets: list[Budget],
           fallback: Callable[[], tuple[Any, list[str]]] | None = None) -> tuple[Any, list[str]]:
    """A genotype within every budget, reached by the fewest, best-ranked op changes, and what changed.

    When no single change saves budget any more (or the walk would revisit a genotype: measured
    latencies are not additive), `fallback()` decides, or the budget is refused.
    """
    current, log, seen = genotype, [], {repr(genotype)}
    while violated := _over_cost(cost := table.genotype_cost(current), budgets):
        best, best_key = None, None
        for change in changes(current):
            if repr(change.genotype) in seen:
                continue
            new = table.genotype_cost(change.genotype)
            savings = [(cost[b.metric] - new[b.metric]) / b.limit for b in violated]
            if min(savings) <= 0:
                continue
            key = (change.parametric, sum(savings) / max(change.alpha_loss, MIN_LOSS))
            if best_key is None or key > best_key:
                best, best_key = change, key
        if best is None:
            if fallback is not None:
                return fallback()
            raise BudgetError("the budget cannot be met by changing ops alone; raise it or change the setting")
        current = best.genotype
        seen.add(repr(current))
        log.append(best.text)
    if log:
        current, given_back = give_back(current, changes, table, budgets)
        log += given_back
    return current, log


def give_back(genotype: Any, changes: ChangeLister, table: Any, budgets: list[Budget]) -> tuple[Any, list[str]]:
    """Undo what a repair overdid: take any change to a parametric op the alphas rank higher while every
    budget still holds (never to a parameter-free one: the repair's order of preference stands)."""
    current, log = genotype, []
    while True:
        ups = sorted((c for c in changes(current) if c.alpha_loss < 0 and c.parametric), key=lambda c: c.alpha_loss)
        up = next((c for c in ups if not _over(table, c.genotype, budgets)), None)
        if up is None:
            return current, log
        current = up.genotype
        log.append(f"{up.text} (given back: every budget still holds)")


def fill(genotype: Any, changes: ChangeLister, table: Any, budgets: list[Budget]) -> tuple[Any, list[str]]:
    """Spend unused budget: upgrade ops to costlier parametric ones while every budget still holds."""
    current, log = genotype, []
    while True:
        cost = table.genotype_cost(current)
        best, best_score = None, None
        for change in changes(current):
            if not change.parametric:
                continue
            new = table.genotype_cost(change.genotype)
            if _over_cost(new, budgets):
                continue
            gain = sum((new[b.metric] - cost[b.metric]) / b.limit for b in budgets)
            if gain <= 0:
                continue
            score = gain / max(change.alpha_loss, MIN_LOSS)
            if best_score is None or score > best_score:
                best, best_score = change, score
        if best is None:
            return current, log
        current = best.genotype
        log.append(f"{best.text} (unused budget)")


def _over_cost(cost: dict[str, float], budgets: list[Budget]) -> list[Budget]:
    return [b for b in budgets if cost[b.metric] > b.limit]


def _over(table: Any, genotype: Any, budgets: list[Budget]) -> list[Budget]:
    return _over_cost(table.genotype_cost(genotype), budgets)
