"""Exact params/FLOPs of NB201 networks and the per-op cost table b(o) of this space.

Two FLOP conventions are offered and every output names the one it used:

- ``macs`` (the repository default, dcanas.cost.FLOPS_CONVENTION): multiply-accumulates of conv and
  linear layers, measured with PyTorch's flop counter;
- ``nb201``: the same plus one addition per output element of every conv/linear bias, which is what
  NAS-Bench-201's own counter reports (its 220.11969 MFLOPs include the classifier's 10 bias adds).
  Pools, BN, ReLU and the `none` op count nothing in either.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...cost import FLOPS_CONVENTION, count_flops, count_params
from ...errors import ConfigError
from .arch import EDGES, NUM_ARCHS, NUM_EDGES, Arch, enumeration_index, iter_archs, resolve_arch
from .network import NB201Network, NB201Setting
from .ops import NONE_INDEX, PRIMITIVES, make_op

NB201_FLOPS_CONVENTION = ("MACs of conv and linear layers plus their bias additions "
                          "(NAS-Bench-201's convention), batch 1")
FLOPS_CONVENTIONS: dict[str, str] = {"macs": FLOPS_CONVENTION, "nb201": NB201_FLOPS_CONVENTION}
INTEGER_METRICS = ("params", "flops")


def _check_convention(convention: str) -> None:
    if convention not in FLOPS_CONVENTIONS:
        raise ConfigError(f"unknown FLOPs convention {convention!r}; choose one of: {', '.join(FLOPS_CONVENTIONS)}")


@torch.no_grad()
def count_bias_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Additions of conv/linear biases in one forward pass: one per output element of each biased layer."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if getattr(module, "bias", None) is not None:
            total += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


@dataclass(frozen=True)
class NB201Cost:
    """Deployed size of an NB201 network under both FLOP conventions."""

    params: int
    flops: int  # MACs of conv + linear (repository convention)
    flops_nb201: int  # the same plus bias additions (NAS-Bench-201's convention)

    def flops_in(self, convention: str = "macs") -> int:
        """FLOPs under `convention` ('macs' or 'nb201')."""
        _check_convention(convention)
        return self.flops_nb201 if convention == "nb201" else self.flops

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, naming both conventions."""
        return {"params": self.params, "flops": self.flops, "flops_convention": FLOPS_CONVENTIONS["macs"],
                "flops_nb201": self.flops_nb201, "flops_nb201_convention": FLOPS_CONVENTIONS["nb201"]}


def measure_nb201_network(net: nn.Module, setting: NB201Setting) -> NB201Cost:
    """Count an already-built NB201 network (or any module taking the setting's input)."""
    shape = setting.input_shape()
    macs = count_flops(net, shape)
    return NB201Cost(count_params(net), macs, macs + count_bias_flops(net, shape))


@functools.lru_cache(maxsize=1024)
def nb201_cost(arch: Arch | str | int, setting: NB201Setting | None = None) -> NB201Cost:
    """Params and FLOPs of `arch` in the NB201 network of `setting` (default: CIFAR-10), exactly."""
    setting = setting or NB201Setting()
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG untouched
        net = NB201Network(resolve_arch(arch), setting)
    return measure_nb201_network(net, setting)


@functools.lru_cache(maxsize=256)
def nb201_op_cost(op: str, channels: int, size: int) -> tuple[int, int, int]:
    """(params, MACs, bias additions) of candidate op `op` on a channels x size x size input."""
    module = make_op(op, channels)
    shape = (1, channels, size, size)
    return sum(p.numel() for p in module.parameters()), count_flops(module, shape), count_bias_flops(module, shape)


@dataclass
class NB201CostTable:
    """b(o) for the NB201 space: `entries[metric][cell, edge, op]` + `fixed[metric]` = whole-network cost.

    Every searchable cell carries the same architecture, so a search only needs `per_edge(metric)`,
    the entries summed over cells: shape [edges, ops], the shape of the supernet's alpha. Integer
    metrics (params, flops) sum exactly to the whole-network counts; an attached latency model sums
    to the model's own prediction (to float rounding): its intercept is `fixed`, its coefficients
    are spread evenly over the cells.
    """

    setting: NB201Setting
    entries: dict[str, np.ndarray]
    fixed: dict[str, float]
    flops_convention: str = "macs"
    ops: tuple[str, ...] = PRIMITIVES
    edges: tuple[tuple[int, int], ...] = EDGES
    notes: dict[str, str] = field(default_factory=dict)  # where a metric came from, e.g. the latency device
    # metric -> [15,625] measured whole-network values in *enumeration* order (NaN = not measured): when
    # present, arch_cost/genotype_cost/bounds report the measurement, and entries/fixed (the additive
    # model) only shape the gradient of the constraint
    measured: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        """The metrics this table can cost."""
        return list(self.entries)

    def per_edge(self, metric: str) -> np.ndarray:
        """Entries summed over cells: [edges, ops], the cost of putting op o on edge e in every cell."""
        return self._entries(metric).sum(axis=0)

    def alpha_costs(self, metric: str) -> list[np.ndarray]:
        """One cost matrix per tensor of NB201Supernet.arch_parameters(), same shapes: k(alpha) = fixed + sum(p * b)."""
        return [self.per_edge(metric)]

    def arch_cost(self, arch: Arch | str | int) -> dict[str, float]:
        """Cost of `arch`: the measured value where one is attached, else fixed parts plus the chosen ops' entries."""
        arch = resolve_arch(arch)
        totals = self.additive_cost(arch)
        if self.measured:
            n = enumeration_index(arch)
            for metric, values in self.measured.items():
                if np.isfinite(values[n]):
                    totals[metric] = float(values[n])
        return totals

    def additive_cost(self, arch: Arch | str | int) -> dict[str, float]:
        """fixed + the entries of the op chosen on every edge of every cell (for latency: the fitted model)."""
        picks = list(resolve_arch(arch).op_indices)
        totals: dict[str, float] = {}
        for metric, table in self.entries.items():
            total = table[:, np.arange(NUM_EDGES), picks].sum() + self.fixed[metric]
            totals[metric] = int(total) if metric in INTEGER_METRICS else float(total)
        return totals

    def kept_edges(self, genotype: Arch | str | int) -> list[np.ndarray]:
        """Per alpha tensor, 1 for each edge the deployed cell runs an op on (every edge but `none` ones)."""
        return [np.array([0.0 if op == "none" else 1.0 for op in resolve_arch(genotype).ops])]

    def attach_measured(self, metric: str, values: np.ndarray, note: str = "") -> None:
        """Measured whole-network `metric` per architecture, [15,625] in enumeration order (NaN = unmeasured)."""
        if metric not in self.entries:
            raise ValueError(f"attach the additive {metric} model before its measurements")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (NUM_ARCHS,):
            raise ValueError(f"measured {metric} has shape {values.shape}, expected ({NUM_ARCHS},)")
        self.measured[metric] = values
        if note:
            self.notes[metric] = f"{self.notes[metric]}; {note}" if metric in self.notes else note

    genotype_cost = arch_cost  # the name the DARTS table uses, for a space-generic search loop

    def all_arch_costs(self, metric: str, op_indices: np.ndarray | None = None) -> np.ndarray:
        """Additive (model) cost of many architectures at once: op_indices [n, 6] (default: all 15,625 in benchmark order)."""
        if op_indices is None:
            op_indices = np.array([a.op_indices for a in iter_archs()])
        b = self.per_edge(metric)
        return self.fixed[metric] + b[np.arange(NUM_EDGES)[None, :], op_indices].sum(axis=1)

    def expected_cost(self, alpha: torch.Tensor, metric: str, *, exclude_none: bool = False) -> torch.Tensor:
        """Differentiable k(alpha) = fixed + sum_e,o softmax(alpha)_e,o * b_e,o (DCA-NAS eq. 3 for this space).

        With `exclude_none` the softmax runs over the ops derive(allow_none=False) can pick, so the
        estimate equals the cost of a network rather than being diluted by `none`.
        """
        if exclude_none:
            mask = torch.arange(len(self.ops), device=alpha.device) == NONE_INDEX
            alpha = alpha.masked_fill(mask, float("-inf"))
        b = torch.as_tensor(self.per_edge(metric), dtype=torch.float32, device=alpha.device)
        return self.fixed[metric] + (F.softmax(alpha.float(), dim=-1) * b).sum()

    def bounds(self, metric: str, *, allow_none: bool = False) -> tuple[float, float]:
        """Smallest and largest cost any architecture can have (over the none-free ones unless `allow_none`).

        For a measured metric: the extremes of the measurements (of the architectures measured).
        """
        if metric in self.measured:
            values = self.measured[metric]
            keep = np.isfinite(values) & (np.ones(NUM_ARCHS, bool) if allow_none else _none_free_mask())
            if keep.any():
                return float(values[keep].min()), float(values[keep].max())
        b = self.per_edge(metric)
        if not allow_none:
            b = np.delete(b, NONE_INDEX, axis=1)
        fixed = self.fixed[metric]
        return float(fixed + b.min(axis=1).sum()), float(fixed + b.max(axis=1).sum())

    def extreme_arch(self, metric: str, *, cheapest: bool = True, allow_none: bool = False) -> Arch:
        """The architecture attaining the lower (or upper) bound of `metric`."""
        b = self.per_edge(metric).astype(float)
        if not allow_none:
            b[:, NONE_INDEX] = np.inf if cheapest else -np.inf
        return Arch.from_indices((b.argmin(axis=1) if cheapest else b.argmax(axis=1)).tolist())

    def add_metric(self, metric: str, entries: np.ndarray, fixed: float, note: str = "") -> None:
        """Attach another additive metric (e.g. a device's latency model) of shape [cells, edges, ops]."""
        expected = (self.setting.cells, len(self.edges), len(self.ops))
        if entries.shape != expected:
            raise ValueError(f"{metric} table has shape {entries.shape}, expected {expected}")
        self.entries[metric] = entries
        self.fixed[metric] = fixed
        if note:
            self.notes[metric] = note

    def add_per_edge_metric(self, metric: str, per_edge: np.ndarray, fixed: float, note: str = "") -> None:
        """Attach a metric known per edge for the whole network ([edges, ops]), spread evenly over the cells."""
        per_edge = np.asarray(per_edge, dtype=np.float64)
        entries = np.broadcast_to(per_edge / self.setting.cells, (self.setting.cells, *per_edge.shape)).copy()
        self.add_metric(metric, entries, float(fixed), note)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (per-edge costs, fixed parts, conventions): what a run folder keeps."""
        return {"space": "nb201", "setting": self.setting.to_dict(), "ops": list(self.ops),
                "edges": [f"{j}<-{i}" for i, j in self.edges],
                "fixed": {m: float(v) for m, v in self.fixed.items()}, "measured": sorted(self.measured),
                "per_edge": {m: self.per_edge(m).tolist() for m in self.entries},
                "flops_convention": FLOPS_CONVENTIONS[self.flops_convention], "notes": dict(self.notes)}

    def _entries(self, metric: str) -> np.ndarray:
        try:
            return self.entries[metric]
        except KeyError:
            raise ConfigError(f"no {metric} table for this NB201 network; available: {', '.join(self.entries)}"
                              + ("; attach a device's latency model with dcanas.spaces.nb201.bench.latency_cost_table"
                                 if metric == "latency" else "")) from None


@functools.lru_cache(maxsize=1)
def _none_free_mask() -> np.ndarray:
    """[15,625] in enumeration order: True for architectures without a `none` edge."""
    digits = np.arange(NUM_ARCHS)[:, None] // len(PRIMITIVES) ** np.arange(NUM_EDGES)[None, :] % len(PRIMITIVES)
    return (digits != NONE_INDEX).all(axis=1)


def build_nb201_cost_table(setting: NB201Setting | None = None, flops_convention: str = "macs") -> NB201CostTable:
    """Measure b(o) (params and FLOPs under `flops_convention`) for every cell, edge and op of `setting`'s network."""
    _check_convention(flops_convention)
    setting = setting or NB201Setting()
    shape = (setting.cells, NUM_EDGES, len(PRIMITIVES))
    params = np.zeros(shape, dtype=np.int64)
    flops = np.zeros(shape, dtype=np.int64)
    widths, sizes = setting.stage_channels(), setting.stage_sizes()
    for cell in range(setting.cells):
        stage = setting.cell_stage(cell)
        for o, op in enumerate(PRIMITIVES):
            p, macs, bias = nb201_op_cost(op, widths[stage], sizes[stage])
            # an NB201 edge's cost does not depend on which edge it is: every edge maps C -> C at one size
            params[cell, :, o] = p
            flops[cell, :, o] = macs + (bias if flops_convention == "nb201" else 0)
    # the all-`none` network is exactly the fixed parts: `none` edges have no weights and count no FLOPs
    base = nb201_cost(Arch(("none",) * NUM_EDGES), setting)
    return NB201CostTable(setting, {"params": params, "flops": flops},
                          {"params": base.params, "flops": base.flops_in(flops_convention)}, flops_convention)

