"""The NAS-Bench-201 search supernet, with DCA-NAS's three search-time savings each switchable off.

One alpha [6 edges, 5 ops] is shared by every cell, as in NB201's DARTS. With bottleneck=1,
weight_sharing=False and derived_cells=False this is NB201's own DARTS supernet (a 5-op mixture on
every edge of every cell, non-affine BN in the cells, affine ResNet reduction blocks).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...remedies import mixing_weights, ranking_logits
from ..darts.ops import ReLUConvBN
from .arch import EDGES, NUM_EDGES, NUM_NODES, Arch
from .network import STAGES
from .ops import NONE_INDEX, PRIMITIVES, ResNetBlock, make_op


@dataclass(frozen=True)
class NB201SupernetConfig:
    """Shape of the NB201 search supernet and which savings are on."""

    channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10
    in_channels: int = 3
    bottleneck: int = 4  # candidate ops run on channels // bottleneck; 1 = off
    weight_sharing: bool = True  # each source node computes each op once for all its destinations
    derived_cells: bool = True  # only the first cell of each stage runs the mixture
    derive_none: bool = False  # whether derive() may pick `none` (NB201-style DARTS does; it may disconnect cells)
    remedy: str = "none"  # how alphas become mixing weights (remedies.py): softmax, or Dirichlet samples
    partial_channels: int = 1  # PC-DARTS: only 1/K of an edge's channels enter its mixed ops (1 = off)
    edge_norm: bool = False  # PC-DARTS: each edge's output is weighted by softmax(beta) over its node's inputs

    def __post_init__(self) -> None:
        if self.bottleneck < 1 or self.channels // self.bottleneck < 1:
            raise ConfigError(f"bottleneck {self.bottleneck} must be >= 1 and leave at least one of "
                              f"{self.channels} channels")
        if self.cells_per_stage < 1:
            raise ConfigError(f"cells per stage must be at least 1, got {self.cells_per_stage}")
        inner = self.channels // self.bottleneck
        if self.partial_channels < 1 or inner % self.partial_channels:
            raise ConfigError(f"--partial-channels {self.partial_channels} must be >= 1 and divide the {inner} "
                              f"channels that enter the candidate ops")
        if self.partial_channels > 1 and self.weight_sharing:
            raise ConfigError("--partial-channels (PC-DARTS) needs per-edge ops: add --no-weight-sharing")

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def candidate_op(name: str, channels: int) -> nn.Module:
    """A search-time candidate: non-affine BN, as NB201's search cells use."""
    return make_op(name, channels, affine=False)


class MixedEdge(nn.Module):
    """All 5 candidate ops of one edge, summed with softmax(alpha) weights (NB201's DARTS MixedOp).

    With `partial` K > 1 (PC-DARTS) only the first C/K channels go through the ops; the others pass by
    unchanged and a channel shuffle mixes the two groups, so every channel is searched over the cells.
    """

    def __init__(self, channels: int, partial: int = 1):
        super().__init__()
        self.partial = partial
        self.ops = nn.ModuleList(candidate_op(p, channels // partial) for p in PRIMITIVES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.partial == 1:
            return sum(w * op(x) for w, op in zip(weights, self.ops))
        searched, bypass = x.split([x.shape[1] // self.partial, x.shape[1] - x.shape[1] // self.partial], dim=1)
        mixed = sum(w * op(searched) for w, op in zip(weights, self.ops))
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.partial)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave `groups` channel groups (ShuffleNet), so the next partial edge sees other channels."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SourceOps(nn.Module):
    """Weight sharing: the candidate ops of one source node, computed once for every destination."""

    def __init__(self, channels: int):
        super().__init__()
        # `none` adds nothing to any mixture, so it is never computed
        self.ops = nn.ModuleDict({p: candidate_op(p, channels) for p in PRIMITIVES if p != "none"})

    def forward(self, x: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        return [(PRIMITIVES.index(name), op(x)) for name, op in self.ops.items()]


class NB201SearchCell(nn.Module):
    """A supernet cell: mixed (weighted by alpha) or discrete (one op per edge, from a derived Arch)."""

    def __init__(self, channels: int, bottleneck: int = 1, weight_sharing: bool = False, partial: int = 1):
        super().__init__()
        self.channels = channels
        self.inner = channels // bottleneck
        self.weight_sharing = weight_sharing
        self.use_bottleneck = bottleneck > 1
        if self.use_bottleneck:
            # squeeze what enters the ops (once per source when shared, else per edge) and restore the
            # channels once per destination node
            n_squeeze = NUM_NODES - 1 if weight_sharing else NUM_EDGES
            self.squeeze = nn.ModuleList(ReLUConvBN(channels, self.inner, 1, 1, 0, affine=False)
                                         for _ in range(n_squeeze))
            self.expand = nn.ModuleList(nn.Sequential(nn.Conv2d(self.inner, channels, 1, bias=False),
                                                      nn.BatchNorm2d(channels, affine=False))
                                        for _ in range(NUM_NODES - 1))
        if weight_sharing:
            self.source_ops = nn.ModuleList(SourceOps(self.inner) for _ in range(NUM_NODES - 1))
        else:
            self.mixed = nn.ModuleList(MixedEdge(self.inner, partial) for _ in EDGES)

    def _squeezed(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return self.squeeze[k](x) if self.use_bottleneck else x

    def _node(self, j: int, total: torch.Tensor) -> torch.Tensor:
        return self.expand[j - 1](total) if self.use_bottleneck else total

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None, arch: Arch | None = None,
                edge_weights: torch.Tensor | None = None) -> torch.Tensor:
        """`weights` [6, 5] (softmax of alpha) runs the mixture, each edge scaled by `edge_weights` [6] when
        given (PC-DARTS's edge normalisation); `arch` runs only its ops."""
        if arch is not None:
            return self._forward_discrete(x, arch)
        nodes = [x]
        outputs: list[list[tuple[int, torch.Tensor]]] = []
        for j in range(1, NUM_NODES):
            if self.weight_sharing:  # node j-1 is complete: run its ops once for every later node
                outputs.append(self.source_ops[j - 1](self._squeezed(j - 1, nodes[j - 1])))
            total = 0
            for k, (i, jj) in enumerate(EDGES):
                if jj != j:
                    continue
                if self.weight_sharing:
                    edge = sum(weights[k, o] * out for o, out in outputs[i])
                else:
                    edge = self.mixed[k](self._squeezed(k, nodes[i]), weights[k])
                total = total + (edge if edge_weights is None else edge_weights[k] * edge)
            nodes.append(self._node(j, total))
        return nodes[-1]

    def _forward_discrete(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        nodes = [x]
        squeezed: dict[int, torch.Tensor] = {}
        for j in range(1, NUM_NODES):
            total = None
            for k, (op, i, jj) in enumerate(arch.edges()):
                if jj != j or op == "none":
                    continue
                if self.weight_sharing:
                    if i not in squeezed:
                        squeezed[i] = self._squeezed(i, nodes[i])
                    out = self.source_ops[i].ops[op](squeezed[i])
                else:
                    out = self.mixed[k].ops[PRIMITIVES.index(op)](self._squeezed(k, nodes[i]))
                total = out if total is None else total + out
            if total is None:  # every input of node j is `none`: the node is zero
                total = x.new_zeros(x.shape[0], self.inner, x.shape[2], x.shape[3])
            nodes.append(self._node(j, total))
        return nodes[-1]


class NB201Supernet(nn.Module):
    """NB201 search network: stem, 3 stages of search cells with ResNet blocks between, one shared alpha."""

    def __init__(self, config: NB201SupernetConfig | None = None):
        super().__init__()
        self.config = config = config or NB201SupernetConfig()
        widths = [config.channels * 2 ** s for s in range(STAGES)]
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]))
        layers: list[nn.Module] = []
        self.mixed_cells: set[int] = set()  # positions in `layers` of the cells that run the mixture
        for stage, c in enumerate(widths):
            if stage > 0:
                layers.append(ResNetBlock(widths[stage - 1], c))
            for n in range(config.cells_per_stage):
                if n == 0 or not config.derived_cells:
                    self.mixed_cells.add(len(layers))
                layers.append(NB201SearchCell(c, config.bottleneck, config.weight_sharing, config.partial_channels))
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], config.num_classes)
        self.alpha = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, len(PRIMITIVES)))
        # PC-DARTS's edge-normalisation weights (absent when off: state dicts of other searches are unchanged)
        self.register_parameter("beta", nn.Parameter(1e-3 * torch.randn(NUM_EDGES)) if config.edge_norm else None)
        self.genotype: Arch = self.derive()
        self.perturbation: list[torch.Tensor] | None = None  # SDARTS-RS, per arch parameter: set around weight steps

    @property
    def arch(self) -> Arch:
        """The architecture the derived cells currently run (same as `genotype`)."""
        return self.genotype

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture weights: [alpha], alpha of shape [6 edges, 5 ops] in EDGES x PRIMITIVES order."""
        return [self.alpha]

    def edge_parameters(self) -> list[nn.Parameter]:
        """PC-DARTS's edge-normalisation weights beta [6] (trained with alpha, not part of any cost); [] when off."""
        return [self.beta] if self.config.edge_norm else []

    def weight_parameters(self) -> list[nn.Parameter]:
        """Everything but alpha and beta."""
        return [p for name, p in self.named_parameters() if name not in ("alpha", "beta")]

    def edge_weights(self) -> torch.Tensor | None:
        """softmax(beta) over the incoming edges of each node ([6]), or None without edge normalisation."""
        if not self.config.edge_norm:
            return None
        dest = torch.tensor([j for _, j in EDGES], device=self.beta.device)
        out = torch.empty_like(self.beta)
        for j in range(1, NUM_NODES):
            mask = dest == j
            out = out.masked_scatter(mask, F.softmax(self.beta[mask], dim=0))
        return out

    def ranking_alphas(self) -> list[torch.Tensor]:
        """Logits whose softmax is each edge's mixing weights at evaluation: what derive and repair rank by."""
        return [ranking_logits(self.alpha.detach(), self.config.remedy)]

    def derive(self, allow_none: bool | None = None) -> Arch:
        """The discrete architecture of the current alpha (argmax op per edge; `none` per config unless given)."""
        return derive_arch(self.ranking_alphas()[0], self.config.derive_none if allow_none is None else allow_none)

    def update_derived(self) -> Arch:
        """Re-derive the architecture the derived cells run (call after every alpha step)."""
        self.genotype = self.derive()
        return self.genotype

    def forward(self, x: torch.Tensor, all_derived: bool = False) -> torch.Tensor:
        """Logits; `all_derived` runs every cell as the derived architecture (the one-shot derived network)."""
        weights = mixing_weights(self.alpha, self.config.remedy, self.training,
                                 self.perturbation[0] if self.training and self.perturbation is not None else None)
        edge_weights = self.edge_weights()
        x = self.stem(x)
        for k, layer in enumerate(self.cells):
            if isinstance(layer, ResNetBlock):
                x = layer(x)
            elif k in self.mixed_cells and not all_derived:
                x = layer(x, weights=weights, edge_weights=edge_weights)
            else:
                x = layer(x, arch=self.genotype)
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


def derive_arch(alpha: torch.Tensor, allow_none: bool = False) -> Arch:
    """NB201 discretisation: the strongest op on every edge (ties to the lower op index)."""
    weights = alpha.detach().float().cpu().clone()
    if not allow_none:
        weights[:, NONE_INDEX] = float("-inf")
    return Arch.from_indices(weights.argmax(dim=-1).tolist())
