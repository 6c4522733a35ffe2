"""Evaluation networks: a genotype stacked into the network the device will run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from ...checks import MAX_CELLS, MAX_CHANNELS, MAX_IMAGE_SIZE, int_in
from ...errors import ConfigError
from .cells import Cell, CellPlan, plan_cells
from .genotype import Genotype, validate_genotype

STEM_MULTIPLIER = 3  # CIFAR stem width = 3 x initial channels, as in DARTS


@dataclass(frozen=True)
class EvalSetting:
    """The deployed network: style ('cifar' or 'imagenet' stem), depth, width, input and classes."""

    style: str = "cifar"
    cells: int = 20
    channels: int = 36
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    auxiliary: bool = True

    def __post_init__(self) -> None:
        if self.style not in ("cifar", "imagenet"):
            raise ConfigError(f"network style must be 'cifar' or 'imagenet', not {self.style!r}")
        limits = {"cells": MAX_CELLS, "channels": MAX_CHANNELS, "image_size": MAX_IMAGE_SIZE, "num_classes": 100_000,
                  "in_channels": 64}
        for name, most in limits.items():
            if not int_in(getattr(self, name), 1, most):
                raise ConfigError(f"{option_name(name)} must be in 1..{most}, got {getattr(self, name)!r}")
        if self.channels % 2:
            raise ConfigError(f"--channels must be even (stride-2 skip connections split channels in two), "
                              f"got {self.channels}")
        if self.style == "imagenet" and self.image_size < 16:
            raise ConfigError("the imagenet stem divides resolution by 8; use --image-size of at least 16")

    def replace(self, **changes: Any) -> "EvalSetting":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def plan(self, steps: int = 4) -> list[CellPlan]:
        """The cell layout of this network."""
        # ImageNet (DARTS mobile) stem: s0 at 1/4 resolution, s1 at 1/8
        s1_size = self.image_size if self.style == "cifar" else _halve(_halve(_halve(self.image_size)))
        return plan_after_stem(self.style, self.cells, self.channels, s1_size, steps)

    @property
    def aux_position(self) -> int:
        """Index of the cell whose output feeds the auxiliary head."""
        return 2 * self.cells // 3


def option_name(field: str) -> str:
    """The command-line option that sets an EvalSetting field (num_classes -> --classes)."""
    return "--classes" if field == "num_classes" else f"--{field.replace('_', '-')}"


def _halve(size: int) -> int:
    return (size + 1) // 2


# Published evaluation settings, keyed by dataset: `dcanas count --dataset X` uses these.
PRESETS: dict[str, EvalSetting] = {
    "cifar10": EvalSetting("cifar", 20, 36, 10, 3, 32),
    "cifar100": EvalSetting("cifar", 20, 36, 100, 3, 32),
    "imagenet": EvalSetting("imagenet", 14, 48, 1000, 3, 224),
    "mnist": EvalSetting("cifar", 20, 36, 10, 1, 28),
    "fashion-mnist": EvalSetting("cifar", 20, 36, 10, 1, 28),
    # the paper's appendix: the 20-cell, 36-channel network for every dataset smaller than ImageNet-1k
    "tinyimagenet": EvalSetting("cifar", 20, 36, 200, 3, 64),
    "digits": EvalSetting("cifar", 8, 16, 10, 1, 8),
    "synthetic": EvalSetting("cifar", 8, 16, 10, 3, 32),
}


# presets whose images are often used resized (TinyImageNet at 224 px): the stem follows a given --image-size, as
# for data without a preset, instead of keeping the preset's CIFAR stem
STEM_FOLLOWS_SIZE = {"tinyimagenet"}


def eval_setting_for(dataset: str, **overrides: Any) -> EvalSetting:
    """The published (or sensible) evaluation setting for `dataset`, with `overrides` applied."""
    base = PRESETS.get(dataset.lower(), EvalSetting())
    overrides = {k: v for k, v in overrides.items() if v is not None}
    guess_stem = dataset.lower() not in PRESETS or dataset.lower() in STEM_FOLLOWS_SIZE
    if "image_size" in overrides and "style" not in overrides and guess_stem:
        overrides["style"] = "imagenet" if overrides["image_size"] >= 128 else "cifar"
    return base.replace(**overrides)


# what a network needs to know of data that has no preset: without all three, an unknown name is a typo
DATA_SHAPE_FIELDS = ("in_channels", "image_size", "num_classes")


def setting_for_named_dataset(dataset: str, **overrides: Any) -> EvalSetting:
    """`eval_setting_for` for a dataset named by a user: an unknown name must come with the data's shape, so a typo
    is refused instead of silently counting the CIFAR-10 network."""
    given = {k for k, v in overrides.items() if v is not None}
    if dataset.lower() not in PRESETS and not set(DATA_SHAPE_FIELDS) <= given:
        raise ConfigError(f"dataset {dataset!r} has no published setting (known: {', '.join(PRESETS)}); for other "
                          "data give its shape: --in-channels, --image-size and --classes (in Python: in_channels, "
                          "image_size, num_classes)")
    return eval_setting_for(dataset, **overrides)


def plan_after_stem(style: str, cells: int, channels: int, s1_size: int, steps: int = 4) -> list[CellPlan]:
    """The layout of `cells` cells after a `style` stem (`make_stems`) whose last output is s1_size pixels wide."""
    if style == "cifar":
        c_stem = STEM_MULTIPLIER * channels
        return plan_cells(cells, channels, (c_stem, c_stem), s1_size, steps)
    # s0 is at twice s1's resolution: the first cell reduces it
    return plan_cells(cells, channels, (channels, channels), s1_size, steps, reduction_prev=True)


def build_stems(setting: EvalSetting) -> tuple[nn.Module, nn.Module]:
    """The stem's two stages: s0 = stem0(x) and s1 = stem1(s0), the first cell's inputs."""
    return make_stems(setting.style, setting.in_channels, setting.channels)


def make_stems(style: str, in_channels: int, c: int) -> tuple[nn.Module, nn.Module]:
    """A `style` stem's two stages for `c` initial channels (the deployed network's and the supernet's)."""
    if style == "cifar":
        c_stem = STEM_MULTIPLIER * c
        # s0 = s1 = stem(x), as in DARTS
        return (nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)),
                nn.Identity())
    # DARTS' ImageNet stem: s0 at 1/4 of the input resolution, s1 at 1/8 (224 -> 56, 28)
    return (nn.Sequential(nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True),
                          nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c)),
            nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(c)))


class AuxiliaryHead(nn.Module):
    """DARTS auxiliary classifier on the output of the second reduction cell (training only)."""

    def __init__(self, channels: int, num_classes: int, input_size: int, style: str):
        super().__init__()
        stride = 3 if style == "cifar" else 2
        # DARTS pools 8x8 (CIFAR) or 7x7 (ImageNet) maps to 2x2; other resolutions pool adaptively
        # to the same 2x2, which changes no parameter.
        if input_size >= 5 and (input_size - 5) // stride + 1 == 2:
            pool: nn.Module = nn.AvgPool2d(5, stride=stride, padding=0, count_include_pad=False)
        else:
            pool = nn.AdaptiveAvgPool2d(2)
        layers: list[nn.Module] = [
            nn.ReLU(inplace=True), pool,
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        if style == "cifar":  # DARTS' ImageNet head omits this BN (a typo kept for its results)
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class EvalNetwork(nn.Module):
    """The DARTS evaluation network (CIFAR or ImageNet stem) for a genotype and setting."""

    def __init__(self, genotype: Genotype, setting: EvalSetting, *, allow_none: bool = False):
        super().__init__()
        validate_genotype(genotype, allow_none=allow_none)
        self.setting = setting
        self.genotype = genotype
        self.drop_path_prob = 0.0
        self.stem0, self.stem1 = build_stems(setting)
        steps = len(genotype.normal) // 2
        plans = setting.plan(steps)
        self.cells = nn.ModuleList()
        for plan in plans:
            if plan.reduction:
                cell = Cell(genotype.reduce, genotype.reduce_concat, plan)
            else:
                cell = Cell(genotype.normal, genotype.normal_concat, plan)
            self.cells.append(cell)
        self.aux_position = setting.aux_position
        self.auxiliary_head = None
        if setting.auxiliary:
            aux_plan = plans[self.aux_position]
            c_aux = len(aux_plan_concat(genotype, aux_plan)) * aux_plan.channels
            self.auxiliary_head = AuxiliaryHead(c_aux, setting.num_classes, aux_plan.output_size, setting.style)
        last = plans[-1]
        c_last = len(aux_plan_concat(genotype, last)) * last.channels
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_last, setting.num_classes)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, and the auxiliary head's logits when training with one (else None)."""
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]


def aux_plan_concat(genotype: Genotype, plan: CellPlan) -> list[int]:
    """The concatenated nodes of the cell at `plan` (reduce or normal)."""
    return list(genotype.reduce_concat if plan.reduction else genotype.normal_concat)


def build_network(genotype: Genotype, setting: EvalSetting) -> EvalNetwork:
    """The evaluation network for `genotype` in `setting`."""
    return EvalNetwork(genotype, setting)
