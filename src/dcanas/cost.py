"""Exact counting of any network: parameters and FLOPs (multiply-accumulates, MACs).

FLOPs are MACs of conv and linear layers, measured with PyTorch's own `torch.utils.flop_counter` (which
counts 2 FLOPs per MAC; we halve it) rather than hand formulas. Each space's cost tables build on these
(`spaces/darts/cost.py`, `spaces/nb201/cost.py`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

FLOPS_CONVENTION = "MACs of conv and linear layers (1 multiply-add = 1 FLOP), batch 1"


def count_params(model: nn.Module, *, include_aux: bool = False) -> int:
    """Trainable parameter count; the auxiliary head is excluded unless `include_aux`."""
    return sum(p.numel() for name, p in model.named_parameters()
               if include_aux or not name.startswith("auxiliary_head"))


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of conv and linear layers for one forward pass at `input_shape` (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
