"""The DARTS search supernet, with DCA-NAS's three search-time savings each switchable off.

With bottleneck=1, weight_sharing=False and derived_cells=False this is exactly the supernet of the
original DARTS search code (same layers, same weight count), the baseline of every speed figure.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...remedies import mixing_weights, ranking_logits
from .cells import CellPlan
from .genotype import Genotype, make_genotype
from .network import make_stems, plan_after_stem
from .ops import PRIMITIVES, FactorizedReduce, ReLUConvBN, make_op

SKIP_INDEX = PRIMITIVES.index("skip_connect")
NONE_INDEX = PRIMITIVES.index("none")
SHARED_OPS = tuple(p for p in PRIMITIVES if p != "none")  # what SourceOps computes, in alpha-column order
SHARED_COLUMNS = [PRIMITIVES.index(p) for p in SHARED_OPS]
PINNED_LOGIT = 1e4  # a pinned op's logit: every other op of its edge gets softmax weight exactly 0 (float32)


@dataclass(frozen=True)
class SupernetConfig:
    """Shape of the search supernet and which savings are on."""

    cells: int = 8
    channels: int = 16
    steps: int = 4
    num_classes: int = 10
    in_channels: int = 3
    bottleneck: int = 4  # candidate ops run on channels // bottleneck; 1 = off
    weight_sharing: bool = True
    derived_cells: bool = True
    max_skips: int | None = None  # cap on skip_connect edges in the derived normal cell (P-DARTS); None = no cap
    remedy: str = "none"  # how alphas become mixing weights (remedies.py): softmax, or Dirichlet samples
    stem: str = "cifar"  # "imagenet": three stride-2 convolutions before the cells (224 px -> 28), as the paper
    # a fixed reduction cell (GDAS): these genotype edges in every reduction cell, never searched; None = searched
    fixed_reduce: tuple[tuple[str, int], ...] | None = None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    @property
    def num_edges(self) -> int:
        """Edges of one cell: every earlier node feeds every intermediate node."""
        return sum(2 + i for i in range(self.steps))


def edge_sources(steps: int) -> list[tuple[int, int]]:
    """(source, destination) node of each edge, in DARTS' alpha row order."""
    return [(i, j) for j in range(2, 2 + steps) for i in range(j)]


def pinned_logits(edges: Sequence[tuple[str, int]], steps: int) -> torch.Tensor:
    """Alpha rows [edges, ops] that derive exactly the cell `edges` and give every other choice probability 0:
    the kept edges' op and the other edges' `none` at PINNED_LOGIT, everything else at 0."""
    sources = edge_sources(steps)
    logits = torch.zeros(len(sources), len(PRIMITIVES))
    logits[:, NONE_INDEX] = PINNED_LOGIT
    for k, (op, i) in enumerate(edges):
        row = sources.index((i, 2 + k // 2))
        logits[row] = 0.0
        logits[row, PRIMITIVES.index(op)] = PINNED_LOGIT
    return logits


def check_pinnable(edges: Sequence[tuple[str, int]], steps: int) -> str | None:
    """Why the cell `edges` cannot be pinned in a supernet of `steps` nodes (None when it can)."""
    if len(edges) != 2 * steps:
        return f"it has {len(edges)} edges, the supernet's cells {2 * steps}"
    for k in range(0, len(edges), 2):
        (op1, i1), (op2, i2) = edges[k], edges[k + 1]
        if i1 == i2:
            return f"node {2 + k // 2} takes node {i1} twice, which one alpha row per edge cannot express"
        if "none" in (op1, op2):
            return "it has a `none` edge"
    return None


def fixed_reduce_cell(name: str, steps: int = 4) -> tuple[tuple[str, int], ...]:
    """The reduction cell of the registered genotype `name`, as a supernet pins it (ConfigError when it cannot)."""
    from ...errors import ConfigError
    from .genotype import GENOTYPES

    if name not in GENOTYPES:
        raise ConfigError(f"unknown --reduce-cell {name!r}; choose a named genotype: {', '.join(GENOTYPES.names())}")
    edges = tuple((op, int(i)) for op, i in GENOTYPES.get(name).reduce)
    why = check_pinnable(edges, steps)
    if why is not None:
        raise ConfigError(f"--reduce-cell {name}: its reduction cell cannot be fixed in the search: {why}")
    return edges


def candidate_op(name: str, channels: int, stride: int) -> nn.Module:
    """A search-time candidate: non-affine BN, and a BN after pools, as in DARTS' MixedOp."""
    op = make_op(name, channels, stride, affine=False)
    if "pool" in name:
        op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
    return op


class MixedOp(nn.Module):
    """All candidate ops on one edge, summed with softmax(alpha) weights (DARTS eq. 1)."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList(candidate_op(p, channels, stride) for p in PRIMITIVES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class SourceOps(nn.Module):
    """Weight sharing: the candidate ops of one source node, computed once for every destination."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        # `none` contributes nothing to any mixture, so it is never computed here.
        self.ops = nn.ModuleDict({p: candidate_op(p, channels, stride) for p in SHARED_OPS})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All candidate outputs stacked [ops, N, C, H, W], so each destination mixes them in one product."""
        return torch.stack([op(x) for op in self.ops.values()])


class SearchCell(nn.Module):
    """A supernet cell: mixed (weighted by alpha) or discrete (a derived genotype's edges)."""

    def __init__(self, plan: CellPlan, steps: int, bottleneck: int, weight_sharing: bool):
        super().__init__()
        c = plan.channels
        self.reduction = plan.reduction
        self.steps = steps
        self.weight_sharing = weight_sharing
        self.preprocess0 = (FactorizedReduce(plan.c_prev_prev, c, affine=False) if plan.reduction_prev
                            else ReLUConvBN(plan.c_prev_prev, c, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(plan.c_prev, c, 1, 1, 0, affine=False)
        self.edges = edge_sources(steps)
        inner = c // bottleneck if bottleneck > 1 else c
        if inner < 2 or inner % 2:
            raise ValueError(f"{c} channels / bottleneck {bottleneck} must leave an even count >= 2")
        self.use_bottleneck = bottleneck > 1
        if self.use_bottleneck:
            # squeeze the channels entering the ops (per source when shared, else per edge) and
            # restore them once per destination node
            n_squeeze = steps + 1 if weight_sharing else len(self.edges)
            self.squeeze = nn.ModuleList(ReLUConvBN(c, inner, 1, 1, 0, affine=False) for _ in range(n_squeeze))
            self.expand = nn.ModuleList(nn.Sequential(nn.Conv2d(inner, c, 1, bias=False),
                                                      nn.BatchNorm2d(c, affine=False)) for _ in range(steps))
        if weight_sharing:
            self.source_ops = nn.ModuleList(SourceOps(inner, plan.stride(i)) for i in range(steps + 1))
        else:
            self.mixed = nn.ModuleList(MixedOp(inner, plan.stride(i)) for i, _ in self.edges)

    def _squeezed(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return self.squeeze[k](x) if self.use_bottleneck else x

    def _node(self, j: int, total: torch.Tensor) -> torch.Tensor:
        return self.expand[j - 2](total) if self.use_bottleneck else total

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor | None = None,
                edges: list[tuple[str, int]] | None = None) -> torch.Tensor:
        """`weights` [edges, ops] runs the mixture; `edges` (a genotype cell) runs only those ops."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        if edges is not None:
            return self._forward_discrete(states, edges)
        if self.weight_sharing:
            outputs = [self.source_ops[0](self._squeezed(0, states[0])),
                       self.source_ops[1](self._squeezed(1, states[1]))]
        k = 0
        for j in range(2, 2 + self.steps):
            total = 0
            for i in range(j):
                w = weights[k]
                if self.weight_sharing:
                    total = total + torch.tensordot(w[SHARED_COLUMNS], outputs[i], dims=1)
                else:
                    total = total + self.mixed[k](self._squeezed(k, states[i]), w)
                k += 1
            states.append(self._node(j, total))
            if self.weight_sharing and j < 1 + self.steps:
                outputs.append(self.source_ops[j](self._squeezed(j, states[j])))
        return torch.cat(states[2:], dim=1)

    def _forward_discrete(self, states: list[torch.Tensor], edges: list[tuple[str, int]]) -> torch.Tensor:
        squeezed: dict[int, torch.Tensor] = {}
        for step in range(self.steps):
            j = 2 + step
            total = 0
            for name, i in edges[2 * step: 2 * step + 2]:
                if self.weight_sharing:
                    if i not in squeezed:
                        squeezed[i] = self._squeezed(i, states[i])
                    total = total + self.source_ops[i].ops[name](squeezed[i])
                else:
                    k = self.edges.index((i, j))
                    total = total + self.mixed[k].ops[PRIMITIVES.index(name)](self._squeezed(k, states[i]))
            states.append(self._node(j, total))
        return torch.cat(states[2:], dim=1)


class Supernet(nn.Module):
    """DARTS search network: stem, `cells` search cells, one alpha per cell type."""

    def __init__(self, config: SupernetConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.stem, self.stem1 = make_stems(config.stem, config.in_channels, c)  # "stem": checkpoints' name for s0's
        # resolution does not change the layout of the cells; 32 is nominal
        plans = plan_after_stem(config.stem, config.cells, c, 32, config.steps)
        self.cells = nn.ModuleList(SearchCell(p, config.steps, config.bottleneck, config.weight_sharing)
                                   for p in plans)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(config.steps * plans[-1].channels, config.num_classes)
        n_ops = len(PRIMITIVES)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(config.num_edges, n_ops))
        reduce_init = 1e-3 * torch.randn(config.num_edges, n_ops)  # drawn either way: the same RNG stream after
        if config.fixed_reduce is not None:  # pinned: no gradient, so no optimiser or regulariser moves it
            reduce_init = pinned_logits(config.fixed_reduce, config.steps)
        self.alpha_reduce = nn.Parameter(reduce_init, requires_grad=config.fixed_reduce is None)
        # With derived cells, only the first normal and the first reduction cell run the mixture; a fixed
        # reduction cell never does.
        searched = [[i for i, p in enumerate(plans) if not p.reduction]]
        if config.fixed_reduce is None:
            searched.append([i for i, p in enumerate(plans) if p.reduction])
        self.mixed_cells = {cells[0] for cells in searched} if config.derived_cells else set().union(*searched)
        self.genotype: Genotype = self.derive()
        self.perturbation: list[torch.Tensor] | None = None  # SDARTS-RS, per arch parameter: set around weight steps

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture weights alpha (normal, reduce)."""
        return [self.alpha_normal, self.alpha_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Everything but alpha."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def ranking_alphas(self) -> list[torch.Tensor]:
        """Logits whose softmax is each edge's mixing weights at evaluation: what derive and repair rank by."""
        return [ranking_logits(a.detach(), self.config.remedy) if a.requires_grad else a.detach()
                for a in self.arch_parameters()]

    def derive(self) -> Genotype:
        """The discrete genotype of the current alphas (top-2 inputs per node, strongest non-none op)."""
        normal, reduce = self.ranking_alphas()
        return derive_genotype(normal, reduce, self.config.steps, max_skips=self.config.max_skips)

    def update_derived(self) -> Genotype:
        """Re-derive the genotype the derived cells run (called after every alpha step)."""
        self.genotype = self.derive()
        return self.genotype

    def forward(self, x: torch.Tensor, all_derived: bool = False) -> torch.Tensor:
        """Logits; `all_derived` runs every cell as the derived genotype (the one-shot derived network)."""
        s0 = self.stem(x)
        s1 = self.stem1(s0)
        delta = self.perturbation if self.training and self.perturbation is not None else (None, None)
        w_normal = mixing_weights(self.alpha_normal, self.config.remedy, self.training, delta[0])
        w_reduce = mixing_weights(self.alpha_reduce, self.config.remedy, self.training, delta[1])
        for i, cell in enumerate(self.cells):
            if i in self.mixed_cells and not all_derived:
                s0, s1 = s1, cell(s0, s1, weights=w_reduce if cell.reduction else w_normal)
            else:
                s0, s1 = s1, cell(s0, s1, edges=self.genotype.reduce if cell.reduction else self.genotype.normal)
        return self.classifier(self.global_pooling(s1).flatten(1))


def derive_genotype(alpha_normal: torch.Tensor, alpha_reduce: torch.Tensor, steps: int = 4, *,
                    max_skips: int | None = None,
                    edge_strength: tuple[torch.Tensor, torch.Tensor] | None = None) -> Genotype:
    """DARTS discretisation: per node keep the two incoming edges with the largest non-none weight.

    With `max_skips`, the normal cell keeps only its strongest skip connections and the others take
    their edge's best remaining op (P-DARTS's remedy for the skip-connect collapse of long searches).
    `edge_strength` (normal, reduce; [edges] each) ranks the edges instead of the weights, e.g. the accuracy
    lost when an edge is taken out (selection.py).
    """

    def cell(alpha: torch.Tensor, skip_cap: int | None, given: torch.Tensor | None) -> list[tuple[str, int]]:
        weights = F.softmax(alpha.float(), dim=-1).cpu()
        weights[:, NONE_INDEX] = -1.0
        strength, best = weights.max(dim=-1)
        if given is not None:
            strength = torch.as_tensor(given, dtype=torch.float64).cpu()
        chosen, k = [], 0
        for j in range(2, 2 + steps):
            rows = list(range(k, k + j))
            # ties broken by lower input index, deterministically
            top = sorted(rows, key=lambda r: (-strength[r].item(), r))[:2]
            chosen += [(r, k) for r in sorted(top)]
            k += j
        ops = {r: best[r].item() for r, _ in chosen}
        skips = sorted((r for r, _ in chosen if ops[r] == SKIP_INDEX), key=lambda r: (-strength[r].item(), r))
        for r in skips[skip_cap:] if skip_cap is not None else []:
            others = weights[r].clone()
            others[SKIP_INDEX] = -1.0
            ops[r] = int(others.argmax())
        return [(PRIMITIVES[ops[r]], r - k) for r, k in chosen]

    normal_strength, reduce_strength = edge_strength if edge_strength is not None else (None, None)
    return make_genotype(cell(alpha_normal, max_skips, normal_strength), cell(alpha_reduce, None, reduce_strength))
