"""Evaluation cells built from a genotype, and the cell layout shared by every DARTS network."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .ops import FactorizedReduce, Identity, ReLUConvBN, drop_path, make_op


@dataclass(frozen=True)
class CellPlan:
    """Where a cell sits in a network: its channels, whether it reduces, and its input resolution."""

    index: int
    reduction: bool
    reduction_prev: bool
    c_prev_prev: int
    c_prev: int
    channels: int
    input_size: int  # resolution of the cell's inputs after preprocessing (= s1's resolution)

    @property
    def output_size(self) -> int:
        """Resolution of the cell's intermediate nodes and output."""
        return (self.input_size + 1) // 2 if self.reduction else self.input_size

    def stride(self, input_index: int) -> int:
        """Stride of an edge leaving node `input_index` (2 from the cell inputs of a reduction cell)."""
        return 2 if self.reduction and input_index < 2 else 1

    def edge_input_size(self, input_index: int) -> int:
        """Resolution of the tensor an edge from node `input_index` consumes."""
        return self.input_size if input_index < 2 else self.output_size


def reduction_cells(cells: int) -> tuple[int, ...]:
    """Indices of the reduction cells: at 1/3 and 2/3 of the depth, as in DARTS."""
    return tuple(sorted({cells // 3, 2 * cells // 3}))


def plan_cells(cells: int, channels: int, stem_channels: tuple[int, int], stem_size: int, multiplier: int = 4,
               reduction_prev: bool = False) -> list[CellPlan]:
    """Lay out `cells` cells after a stem whose two outputs have `stem_channels` channels.

    `stem_size` is the resolution of the stem's last output (s1); `reduction_prev` says whether the
    stem's s0 is at twice that resolution (the ImageNet stem), so the first cell must reduce it.
    """
    c_pp, c_p = stem_channels
    c_cur = channels
    size = stem_size
    reductions = reduction_cells(cells)
    plans = []
    for i in range(cells):
        reduction = i in reductions
        if reduction:
            c_cur *= 2
        plan = CellPlan(i, reduction, reduction_prev, c_pp, c_p, c_cur, size)
        plans.append(plan)
        reduction_prev = reduction
        c_pp, c_p = c_p, multiplier * c_cur
        size = plan.output_size
    return plans


class Cell(nn.Module):
    """A discrete cell: each intermediate node sums two ops applied to earlier nodes."""

    def __init__(self, edges: Sequence[tuple[str, int]], concat: Sequence[int], plan: CellPlan):
        super().__init__()
        c = plan.channels
        self.reduction = plan.reduction
        self.preprocess0 = (FactorizedReduce(plan.c_prev_prev, c) if plan.reduction_prev
                            else ReLUConvBN(plan.c_prev_prev, c, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(plan.c_prev, c, 1, 1, 0)
        self.ops = nn.ModuleList(make_op(name, c, plan.stride(index)) for name, index in edges)
        self.indices = [index for _, index in edges]
        self.concat = list(concat)
        self.steps = len(edges) // 2

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for step in range(self.steps):
            pair = []
            for k in (2 * step, 2 * step + 1):
                op = self.ops[k]
                h = op(states[self.indices[k]])
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                pair.append(h)
            states.append(pair[0] + pair[1])  # one add (starting from 0 would copy the first op's output)
        return torch.cat([states[i] for i in self.concat], dim=1)
