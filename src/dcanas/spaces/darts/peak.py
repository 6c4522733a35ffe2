"""Peak activation memory of DARTS evaluation networks, composed from per-op programs instead of tracing
each whole network, so a search can ask for it every step and repair can try hundreds of genotypes.

A network runs as segments: the stem, then each cell, then the classifier. While cell k runs, what is alive
from outside it is the input image and its two inputs (the outputs of cells k-2 and k-1); nothing else from
earlier survives. So the network's peak is the largest segment peak, and a cell's segment peak depends only on
its own edges and its place in the network (`Segment`). Each candidate op's program is traced once per shape
(`memory.fx_program`) and spliced into the cell's program in `Cell.forward`'s order; the result equals the fx
trace of the whole network exactly (a test, on random genotypes in both stem styles).
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ...memory import Value, fx_program, program_peak
from .cells import CellPlan
from .genotype import Genotype
from .network import EvalSetting, build_stems
from .ops import PRIMITIVES, FactorizedReduce, ReLUConvBN, make_op

Edges = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Segment:
    """A cell's place in the network, as its memory sees it."""

    plan: CellPlan
    s0_resolution: int  # of the cell's first input (the output of cell k-2, or the stem); s1 is at plan.input_size
    s0_is_s1: bool  # the CIFAR stem feeds the same tensor to both inputs of the first cell
    s1_kept: bool  # s1 is the next cell's s0, so it outlives this cell (not after the last cell)


@functools.lru_cache(maxsize=4096)
def _program(kind: str, c_in: int, c_out: int, stride: int, size: int) -> tuple[tuple[Value, ...], int]:
    """The inference program of one module on a 1 x c_in x size x size input, and the index it returns."""
    with torch.random.fork_rng(devices=[]):  # building draws init weights; keep the caller's stream
        if kind == "preprocess":
            module: nn.Module = ReLUConvBN(c_in, c_out, 1, 1, 0)
        elif kind == "preprocess_reduce":
            module = FactorizedReduce(c_in, c_out)
        else:
            module = make_op(kind, c_in, stride)
    values, _, returned = fx_program(module.eval(), torch.zeros(1, c_in, size, size))
    return tuple(values), returned[0]


def _splice(values: list[Value], program: tuple[tuple[Value, ...], int], source: int) -> int:
    """Append `program` reading `source` (its placeholder) to `values`; the index of its result."""
    body, result = program
    where = {0: source}
    for i, v in enumerate(body[1:], start=1):
        where[i] = len(values)
        values.append(Value(v.size, tuple(where[u] for u in v.inputs),
                            None if v.view_of is None else where[v.view_of]))
    return where[result]


@functools.lru_cache(maxsize=65536)
def segment_peak(edges: Edges, concat: tuple[int, ...], seg: Segment) -> int:
    """Largest number of elements alive while one cell runs, its inputs included (the image excluded)."""
    plan, c = seg.plan, seg.plan.channels
    values, s1, pre0, pre1 = _preprocessing(seg)
    states = [pre0, pre1]
    out_elems = c * plan.output_size ** 2
    for step in range(len(edges) // 2):
        pair = [_splice(values, _program(op, c, c, plan.stride(i), plan.edge_input_size(i)), states[i])
                for op, i in edges[2 * step:2 * step + 2]]
        values.append(Value(out_elems, tuple(pair)))
        states.append(len(values) - 1)
    values.append(Value(out_elems * len(concat), tuple(states[j] for j in concat)))
    keep = [len(values) - 1] + ([s1] if seg.s1_kept else [])
    return program_peak(values, [0, s1], keep)


def _preprocessing(seg: Segment) -> tuple[list[Value], int, int, int]:
    """A cell's program up to its preprocessed inputs: the values (s0 at index 0), and the indices of s1
    (0 again when the stem feeds one tensor to both) and of the two preprocessed inputs."""
    plan, c = seg.plan, seg.plan.channels
    values = [Value(plan.c_prev_prev * seg.s0_resolution ** 2)]
    s1 = 0
    if not seg.s0_is_s1:
        s1 = len(values)
        values.append(Value(plan.c_prev * plan.input_size ** 2))
    kind = "preprocess_reduce" if plan.reduction_prev else "preprocess"
    pre0 = _splice(values, _program(kind, plan.c_prev_prev, c, 1, seg.s0_resolution), 0)
    pre1 = _splice(values, _program("preprocess", plan.c_prev, c, 1, plan.input_size), s1)
    return values, s1, pre0, pre1


@functools.lru_cache(maxsize=256)
def network_layout(setting: EvalSetting, steps: int = 4) -> tuple[int, tuple[Segment, ...], int]:
    """(stem peak, one Segment per cell, classifier peak), in elements, the image excluded."""
    stem0, stem1 = build_stems(setting)
    stem = _StemPair(stem0, stem1).eval()
    x = torch.zeros(1, setting.in_channels, setting.image_size, setting.image_size)
    values, inputs, returned = fx_program(stem, x)
    stem_peak = program_peak(values, inputs, inputs + returned) - values[inputs[0]].size
    with torch.no_grad():
        s0, s1 = stem(x)
    resolutions = [s0.shape[-1], s1.shape[-1]]
    plans = setting.plan(steps)
    segments = []
    for k, plan in enumerate(plans):
        segments.append(Segment(plan, resolutions[k], setting.style == "cifar" and k == 0, k + 1 < len(plans)))
        resolutions.append(plan.output_size)
    last = plans[-1]
    # the last cell's output while its global average exists
    head_peak = steps * last.channels * (last.output_size ** 2 + 1)
    return stem_peak, tuple(segments), head_peak


class _StemPair(nn.Module):
    def __init__(self, stem0: nn.Module, stem1: nn.Module):
        super().__init__()
        self.stem0, self.stem1 = stem0, stem1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


def _edges(genotype: Genotype, reduction: bool) -> tuple[Edges, tuple[int, ...]]:
    edges = genotype.reduce if reduction else genotype.normal
    concat = genotype.reduce_concat if reduction else genotype.normal_concat
    return tuple((op, int(i)) for op, i in edges), tuple(concat)


def segment_peaks(genotype: Genotype, setting: EvalSetting) -> list[int]:
    """Peak elements of each cell's segment (the image excluded)."""
    _, segments, _ = network_layout(setting, len(genotype.normal) // 2)
    return [segment_peak(*_edges(genotype, seg.plan.reduction), seg) for seg in segments]


def genotype_peak_elements(genotype: Genotype, setting: EvalSetting) -> int:
    """Peak activation elements of one inference at batch 1, the input image included."""
    stem, _, head = network_layout(setting, len(genotype.normal) // 2)
    image = setting.in_channels * setting.image_size ** 2
    return image + max(stem, head, *segment_peaks(genotype, setting))


def op_extra_elements(plan: CellPlan, input_index: int, op: str) -> int:
    """Elements `op` allocates above its input on an edge leaving node `input_index` of `plan`'s cell, at
    its most (0 for a skip connection, which is a view): its pull on a segment's peak."""
    size = plan.edge_input_size(input_index)
    values, _ = _program(op, plan.channels, plan.channels, plan.stride(input_index), size)
    return program_peak(values, [0], [0]) - values[0].size


@functools.lru_cache(maxsize=65536)
def _node_phase_peak(seg: Segment, node: int, pair: Edges, alive: tuple[bool, bool], last: tuple[bool, bool]) -> int:
    """Largest number of elements alive while intermediate `node` of a cell runs `pair` (two (op, input)
    edges): the cell's earlier nodes, preprocessed inputs still `alive` (freed here where this is their `last`
    use), and s1 when it outlives the cell."""
    plan, c = seg.plan, seg.plan.channels
    pre = c * plan.input_size ** 2
    values: list[Value] = []
    states: dict[int, int] = {}
    keep = []
    for i in range(node):
        if i < 2 and not alive[i]:
            continue
        states[i] = len(values)
        values.append(Value(pre if i < 2 else c * plan.output_size ** 2))
        if i >= 2 or not last[i]:
            keep.append(states[i])
    outside = plan.c_prev * plan.input_size ** 2 if seg.s1_kept else 0
    results = [_splice(values, _program(op, c, c, plan.stride(i), plan.edge_input_size(i)), states[i])
               for op, i in pair]
    values.append(Value(c * plan.output_size ** 2, tuple(results)))
    return outside + program_peak(values, list(states.values()), keep + [len(values) - 1])


def _pairs(node: int, ops: Sequence[str], last_use: tuple[int, int]) -> list[Edges]:
    """The ordered input pairs `node` may take when the preprocessed inputs 0 and 1 are last used at
    `last_use`: it must read input i at its last use, must not after it, and may before it."""
    pairs = []
    for a, b in itertools.permutations(range(node), 2):
        if all(node < last_use[i] or (i in (a, b)) == (node == last_use[i]) for i in (0, 1)):
            pairs.append(((ops[a], a), (ops[b], b)))
    return pairs


def _outer_phases_peak(seg: Segment, steps: int) -> int:
    """The peak of a cell's phases no edge choice changes: preprocessing both inputs (node 2 reads both) and
    concatenating the nodes."""
    plan, c = seg.plan, seg.plan.channels
    values, s1, pre0, pre1 = _preprocessing(seg)
    outside = plan.c_prev * plan.input_size ** 2 if seg.s1_kept else 0
    preprocessing = program_peak(values, [0, s1], [pre0, pre1] + ([s1] if seg.s1_kept else []))
    return max(preprocessing, outside + 2 * steps * c * plan.output_size ** 2)


def cell_peak_bounds(segments: Sequence[Segment], light: Sequence[str], heavy: Sequence[str],
                     steps: int = 4) -> tuple[int, int]:
    """Smallest and largest of the largest segment peak over `segments` (cells sharing one genotype), over
    every ordered edge pattern with each edge's lightest (`light[i]` for input i) or heaviest op.

    Replacing an op by one that allocates less never raises a peak, so the extremes sit at these op choices.
    A cell's peak is the largest of its phases: preprocessing, each node, the concatenation. What couples the
    nodes is only where the two preprocessed inputs are last used (every node is kept for the concatenation),
    so for each pair of last uses every node picks its own best edges: exact, without enumerating patterns.
    """
    unique = list(dict.fromkeys(segments))
    ends = range(2, 2 + steps)  # node 2 reads both inputs, so both are used
    outer = max(_outer_phases_peak(s, steps) for s in unique)
    results = []
    for ops, pick in ((light, min), (heavy, max)):
        best = None
        for last_use in itertools.product(ends, ends):
            worst = 0
            for node in range(2, 2 + steps):
                choices = [max(_node_phase_peak(s, node, pair, (node <= last_use[0], node <= last_use[1]),
                                                (node == last_use[0], node == last_use[1])) for s in unique)
                           for pair in _pairs(node, ops, last_use)]
                if not choices:
                    break
                worst = max(worst, pick(choices))
            else:
                best = worst if best is None else pick(best, worst)
        results.append(best)
    return max(outer, results[0]), max(outer, results[1])


def peak_bounds(setting: EvalSetting, steps: int = 4) -> tuple[int, int]:
    """Smallest and largest peak activation elements (image included) any genotype has in `setting`."""
    stem, segments, head = network_layout(setting, steps)
    low = high = max(stem, head)
    for reduction in (False, True):
        group = [s for s in segments if s.plan.reduction == reduction]
        if not group:
            continue
        ranked = [ranked_ops(group[0].plan, i) for i in range(steps + 1)]
        lo, hi = cell_peak_bounds(group, [r[0] for r in ranked], [r[-1] for r in ranked], steps)
        low, high = max(low, lo), max(high, hi)
    image = setting.in_channels * setting.image_size ** 2
    return image + low, image + high


def ranked_ops(plan: CellPlan, input_index: int) -> list[str]:
    """The candidate ops (no `none`) from the least to the most memory on this edge."""
    ops = [op for op in PRIMITIVES if op != "none"]
    return sorted(ops, key=lambda op: op_extra_elements(plan, input_index, op))
