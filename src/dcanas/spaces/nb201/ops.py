"""The NAS-Bench-201 candidate operations and its residual reduction block.

Shared by the evaluation network and the search supernet. Layer structure and order follow the
NAS-Bench-201 models so that parameter and FLOP counts equal the benchmark's to the last unit.
The ReLU-Conv-BN, identity and zero layers are the DARTS space's own (same structure), not copies.
"""
from __future__ import annotations

import torch
from torch import nn

from ..darts.ops import Identity, ReLUConvBN, Zero

# In NAS-Bench-201's own order: the benchmark enumerates architectures over this tuple.
PRIMITIVES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NONE_INDEX = PRIMITIVES.index("none")
PARAMETRIC: frozenset[str] = frozenset({"nor_conv_1x1", "nor_conv_3x3"})


def make_op(name: str, channels: int, affine: bool = True) -> nn.Module:
    """Instantiate candidate op `name` on `channels` channels (NB201 cell edges never change shape)."""
    if name == "none":
        return Zero(1)
    if name == "skip_connect":
        return Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0, affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1, affine)
    if name == "avg_pool_3x3":
        # NB201's POOLING: no BN and no 1x1 conv when the channel count does not change
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise KeyError(f"unknown NAS-Bench-201 op {name!r}; valid ops: {', '.join(PRIMITIVES)}")


class ResNetBlock(nn.Module):
    """The reduction block between stages: a stride-2 ResNet basic block with a pool+1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine)
        # NB201's shortcut has no BN and no ReLU: AvgPool2d(2, 2) then a bias-free 1x1 conv
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))
