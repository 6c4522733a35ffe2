"""The alphas' best DARTS genotypes inside a budget: what `--rerank` chooses among in the DARTS space.

NAS-Bench-201 has 15,625 architectures and its landing scores every one; a DARTS genotype is 8 node choices
(two distinct inputs and an op on each) of 49 to 490 options, about 10^9 genotypes per cell and 10^18 per cell
pair, so the list is built by a beam over the node choices instead: best sum of log softmax(alpha) first, keeping
only partial genotypes that can still end inside each additive budget's band (parameters, FLOPs, a latency
table are exact sums of the cost table's entries). Peak memory is a maximum, not a sum: it is checked (at most
the limit; the band is the additive budgets') on the finished genotypes only, from a beam `MEMORY_BEAM` times
wider so that enough of them pass. A beam is not an exact k-best list: the tests check that a beam 32 times wider
returns the same top of the list, and that without a budget the first genotype is DARTS' own discretisation.

`random_in_band` is the control a search must beat (Li & Talwalkar 2019): a uniformly random genotype landed in
the same band, drawn until one fits.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .cost import CostTable
from ...errors import BudgetError
from .genotype import Genotype, make_genotype, random_genotype
from .ops import PRIMITIVES

if TYPE_CHECKING:
    from ...constraint import Budget

BEAM_FACTOR = 4  # partial genotypes kept per candidate asked for (at least MIN_BEAM)
MIN_BEAM = 256
MAX_RANDOM_DRAWS = 20_000  # random genotypes drawn for one in the band, at most (a few suffice at width-matched budgets)
MEMORY_BEAM = 8  # how much wider the beam is under a peak-memory budget, which only the finished genotypes see


def node_options(logp: np.ndarray, costs: np.ndarray, node: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every choice of node `node` (2..): two distinct inputs and a non-none op on each, as (score [O],
    cost [O, M], choice [O, 4] = input 1, op 1, input 2, op 2); rows of `logp`/`costs` in DARTS alpha order."""
    first_row = sum(range(2, node))  # nodes 2..node-1 have 2, 3, ... incoming edges before this node's
    ops = [o for o, name in enumerate(PRIMITIVES) if name != "none"]
    choices = np.array([(i1, o1, i2, o2) for i1 in range(node) for i2 in range(i1 + 1, node)
                        for o1 in ops for o2 in ops], dtype=np.int64)
    r1, r2 = first_row + choices[:, 0], first_row + choices[:, 2]
    score = logp[r1, choices[:, 1]] + logp[r2, choices[:, 3]]
    cost = costs[r1, choices[:, 1]] + costs[r2, choices[:, 3]]
    return score, cost, choices


def top_genotypes(alphas: list, table: CostTable, budgets: list["Budget"], top: int,
                  floor: float = 0.0) -> list[Genotype]:
    """Up to `top` genotypes with the highest sum of log softmax(alpha) (none excluded) whose cost is
    `floor`..1 x every budget, best first; [] when the beam finds none."""
    logp = [F.log_softmax(torch.as_tensor(a).detach().float().cpu(), -1).numpy().astype(np.float64) for a in alphas]
    additive = [b for b in budgets if b.metric != "memory"]
    steps = table.steps
    # per cell type, per additive budget: [edges, ops] cost; 0 columns when nothing is additive
    costs = [np.stack([table.alpha_costs(b.metric)[k] for b in additive], -1) if additive
             else np.zeros((logp[k].shape[0], logp[k].shape[1], 0)) for k in range(2)]
    options = [node_options(logp[k], costs[k], node) for k in range(2) for node in range(2, 2 + steps)]
    limits = np.array([b.limit for b in additive], dtype=np.float64)
    fixed = np.array([table.fixed[b.metric] for b in additive], dtype=np.float64)
    # what the choices not yet made can add at least / at most: keeps every partial genotype finishable
    least = np.array([o[1].min(axis=0) if len(limits) else np.zeros(0) for o in options])
    most = np.array([o[1].max(axis=0) if len(limits) else np.zeros(0) for o in options])
    rest_least = np.concatenate([np.cumsum(least[::-1], axis=0)[::-1][1:], np.zeros((1, len(limits)))])
    rest_most = np.concatenate([np.cumsum(most[::-1], axis=0)[::-1][1:], np.zeros((1, len(limits)))])

    beam = max(MIN_BEAM, BEAM_FACTOR * top) * (MEMORY_BEAM if len(additive) < len(budgets) else 1)
    score, cost, picks = np.zeros(1), fixed[None, :], np.zeros((1, 0), dtype=np.int64)
    for n, (o_score, o_cost, _) in enumerate(options):
        total = (score[:, None] + o_score[None, :]).ravel()
        spent = (cost[:, None, :] + o_cost[None, :, :]).reshape(total.size, len(limits))
        ok = ((spent + rest_least[n] <= limits) & (spent + rest_most[n] >= floor * limits)).all(axis=1)
        kept = np.flatnonzero(ok)
        if kept.size == 0:
            return []
        kept = kept[np.lexsort((kept, -total[kept]))][:beam]  # the best by score; ties to the earlier choice
        parent, choice = np.divmod(kept, len(o_score))
        score, cost, picks = total[kept], spent[kept], np.column_stack([picks[parent], choice])

    found: list[Genotype] = []
    for row in picks:
        genotype = _genotype(row, options, steps)
        if in_band(table.genotype_cost(genotype), budgets, floor):
            found.append(genotype)
            if len(found) == top:
                break
    return found


def in_band(cost: dict[str, float], budgets: list["Budget"], floor: float) -> bool:
    """Whether `cost` is within every budget and uses at least `floor` of each additive one (peak memory is a
    maximum: at most its limit)."""
    return all(cost[b.metric] <= b.limit and (b.metric == "memory" or cost[b.metric] >= floor * b.limit)
               for b in budgets)


def random_in_band(table: CostTable, budgets: list["Budget"], seed: int, floor: float,
                   max_draws: int = MAX_RANDOM_DRAWS) -> tuple[Genotype, int]:
    """The first uniformly random genotype drawn from `seed` (two distinct inputs per node, any op but none)
    whose cost is `floor`..1 x every budget, and how many draws it took."""
    for b in budgets:  # out of reach whatever is drawn: say so at once, with the setting's range
        low, high = table.bounds(b.metric)
        if b.limit < low or (b.metric != "memory" and floor * b.limit > high):  # memory has no floor (in_band)
            raise BudgetError(f"no cell of this setting uses {100 * floor:.0f}-100 % of {b.metric} {b.limit:,.0f}: its "
                              f"networks span {low:,.0f}..{high:,.0f}; change --channels/--cells or the budget")
    rng = random.Random(seed)
    for draw in range(1, max_draws + 1):
        genotype = random_genotype(rng, table.steps)
        if in_band(table.genotype_cost(genotype), budgets, floor):
            return genotype, draw
    named = ", ".join(f"{b.metric} {b.limit:,.0f}" for b in budgets)
    raise BudgetError(f"no random cell uses {100 * floor:.0f}-100 % of {named} in {max_draws:,} draws: at this width the "
                      "budget is too tight or too loose for a cell; change --channels or the budget")


def _genotype(picks: np.ndarray, options: list, steps: int) -> Genotype:
    """The genotype of one row of node-choice indices (normal nodes first, then reduction nodes)."""
    cells = []
    for k in range(2):
        edges = []
        for node in range(steps):
            i1, o1, i2, o2 = options[k * steps + node][2][picks[k * steps + node]]
            edges += [(PRIMITIVES[o1], int(i1)), (PRIMITIVES[o2], int(i2))]
        cells.append(edges)
    return make_genotype(cells[0], cells[1])
