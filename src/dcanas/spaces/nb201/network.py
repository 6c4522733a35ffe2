"""The NAS-Bench-201 evaluation network, built exactly as the benchmark builds it.

stem (conv 3x3 + BN) -> N cells at C -> ResNet block -> N cells at 2C -> ResNet block -> N cells at 4C
-> BN + ReLU -> global average pool -> linear classifier (with bias). Every edge of every cell runs,
including `none` edges and edges of nodes the output never reads: the benchmark's counts include them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from .arch import EDGES, NUM_NODES, Arch, resolve_arch
from .ops import ResNetBlock, make_op

STAGES = 3


@dataclass(frozen=True)
class NB201Setting:
    """The deployed NB201 network: width C, cells per stage N, input and classes (benchmark: C=16, N=5)."""

    channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32

    def __post_init__(self) -> None:
        for name in ("channels", "cells_per_stage", "num_classes", "in_channels", "image_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if self.image_size % 4:
            # two stride-2 stages: the conv path and the pool shortcut only agree on even sizes
            raise ConfigError(f"NB201 networks halve the input twice; use an image size divisible by 4, "
                              f"not {self.image_size}")

    @property
    def cells(self) -> int:
        """Number of searchable cells (3 stages x N)."""
        return STAGES * self.cells_per_stage

    def stage_channels(self) -> tuple[int, ...]:
        """Channels of the cells of each stage: C, 2C, 4C."""
        return tuple(self.channels * 2 ** s for s in range(STAGES))

    def stage_sizes(self) -> tuple[int, ...]:
        """Feature-map side of each stage: H, H/2, H/4."""
        return tuple(self.image_size // 2 ** s for s in range(STAGES))

    def cell_stage(self, cell: int) -> int:
        """Stage (0, 1, 2) of searchable cell `cell`."""
        return cell // self.cells_per_stage

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        """Shape of an input batch."""
        return (batch, self.in_channels, self.image_size, self.image_size)

    def replace(self, **changes: Any) -> NB201Setting:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


# The benchmark's three datasets (CIFAR-10 also stands for its cifar10-valid split).
NB201_PRESETS: dict[str, NB201Setting] = {
    "cifar10": NB201Setting(num_classes=10),
    "cifar100": NB201Setting(num_classes=100),
    "imagenet16-120": NB201Setting(num_classes=120, image_size=16),
}
_ALIASES = {"cifar10-valid": "cifar10", "imagenet16_120": "imagenet16-120", "imagenet16": "imagenet16-120",
            "imagenet": "imagenet16-120"}


def nb201_setting_for(dataset: str = "cifar10", **overrides: Any) -> NB201Setting:
    """The benchmark's setting for `dataset` (cifar10, cifar100, imagenet16-120), with overrides (None = keep)."""
    key = dataset.lower()
    key = _ALIASES.get(key, key)
    if key not in NB201_PRESETS:
        raise ConfigError(f"unknown NAS-Bench-201 dataset {dataset!r}; choose one of: {', '.join(NB201_PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return NB201_PRESETS[key].replace(**changes) if changes else NB201_PRESETS[key]


class NB201Cell(nn.Module):
    """One cell: node j = sum over i < j of op_{j<-i}(node i); the output is node 3."""

    def __init__(self, arch: Arch, channels: int, affine: bool = True):
        super().__init__()
        self.arch = arch
        self.edges = nn.ModuleList(make_op(op, channels, affine) for op in arch.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, NUM_NODES):
            nodes.append(sum(self.edges[k](nodes[i]) for k, (i, jj) in enumerate(EDGES) if jj == j))
        return nodes[-1]


class NB201Network(nn.Module):
    """The network NAS-Bench-201 trains for `arch` (its TinyNetwork), returning logits."""

    def __init__(self, arch: Arch | str | int, setting: NB201Setting | None = None):
        super().__init__()
        self.arch = resolve_arch(arch)
        self.setting = setting or NB201Setting()
        s = self.setting
        widths = s.stage_channels()
        self.stem = nn.Sequential(nn.Conv2d(s.in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]))
        layers: list[nn.Module] = []
        for stage, c in enumerate(widths):
            if stage > 0:
                layers.append(ResNetBlock(widths[stage - 1], c))
            layers.extend(NB201Cell(self.arch, c) for _ in range(s.cells_per_stage))
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], s.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x)
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))
