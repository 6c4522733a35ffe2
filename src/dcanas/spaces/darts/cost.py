"""DARTS-space costs: whole evaluation networks (NetworkCost) and the per-op tables b(o) the search uses."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from ...cost import count_flops, count_params
from ...errors import GenotypeError
from ...memory import dtype_bytes
from .genotype import Genotype, make_genotype
from .network import EvalNetwork, EvalSetting
from .ops import PRIMITIVES, make_op
from .peak import genotype_peak_elements, network_layout, op_extra_elements, peak_bounds, segment_peaks

METRICS = ("params", "flops")


@dataclass(frozen=True)
class NetworkCost:
    """Deployed size of an evaluation network."""

    params: int  # without the auxiliary head: what the device stores
    params_with_aux: int
    flops: int  # MACs at batch 1, auxiliary head never runs at inference

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return {"params": self.params, "params_with_aux": self.params_with_aux, "flops": self.flops}


def measure_network(net: EvalNetwork) -> NetworkCost:
    """Count an already-built evaluation network."""
    s = net.setting
    return NetworkCost(count_params(net), count_params(net, include_aux=True),
                       count_flops(net, (1, s.in_channels, s.image_size, s.image_size)))


def network_cost(genotype: Genotype, setting: EvalSetting) -> NetworkCost:
    """Params (with and without auxiliary head) and FLOPs of `genotype` deployed in `setting`."""
    return measure_network(EvalNetwork(genotype, setting))


@functools.lru_cache(maxsize=4096)
def op_cost(op: str, channels: int, stride: int, size: int) -> tuple[int, int]:
    """(params, MACs) of candidate op `op` on a channels x size x size input, measured once."""
    # a private RNG: this runs on cache misses only, and drawing init weights from the global stream here
    # would make a seeded search depend on what its process measured before (pool and Ray workers)
    with torch.random.fork_rng(devices=[]):
        module = make_op(op, channels, stride)
    params = sum(p.numel() for p in module.parameters())
    return params, count_flops(module, (1, channels, size, size))


@dataclass
class CostTable:
    """b(o): the cost of each candidate op on each edge position of an evaluation network.

    `entries[metric][cell, i, o]` is the cost of op `ops[o]` on an edge leaving node `i` of cell
    `cell` (the same for every destination node). Whole-network cost = `fixed[metric]` + the sum of
    the entries a genotype selects, exactly.
    """

    setting: EvalSetting
    steps: int
    ops: tuple[str, ...]
    entries: dict[str, np.ndarray]
    fixed: dict[str, float]
    reduction: np.ndarray = field(repr=False)  # bool per cell
    # peak activation memory (bytes at this dtype) is a maximum, not a sum: `entries["memory"]` holds what each
    # op allocates above its input (its pull on a cell's peak), while costs and bounds come from spaces/darts/peak.py
    memory_dtype: str | None = None

    def genotype_cost(self, genotype: Genotype) -> dict[str, float]:
        """Cost of `genotype` from the table: fixed parts plus the selected ops."""
        full = list(range(2, 2 + self.steps))
        if (len(genotype.normal) != 2 * self.steps or list(genotype.normal_concat) != full
                or list(genotype.reduce_concat) != full):
            raise GenotypeError(f"cost tables assume {self.steps} nodes all concatenated; "
                                f"count this genotype with network_cost instead")
        totals = {}
        for metric, table in self.entries.items():
            if metric == "memory":
                totals[metric] = float(genotype_peak_elements(genotype, self.setting) * self._bytes)
                continue
            total = self.fixed[metric]
            for cell, is_reduction in enumerate(self.reduction):
                for op, index in (genotype.reduce if is_reduction else genotype.normal):
                    total += table[cell, index, self.ops.index(op)]
            totals[metric] = total.item() if hasattr(total, "item") else total
        return totals

    def per_cell_type(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Entries summed over normal cells and over reduction cells: (normal, reduce), each [inputs, ops]."""
        table = self.entries[metric]
        return table[~self.reduction].sum(axis=0), table[self.reduction].sum(axis=0)

    def alpha_costs(self, metric: str) -> list[np.ndarray]:
        """Per alpha group (normal, reduce): [edges, ops] cost of each op on each supernet edge, summed
        over every deployed cell that group's alpha describes (memory: the most over those cells)."""
        if metric == "memory":
            table = self.entries[metric]
            return [table[self.reduction == r].max(axis=0)[self._sources] for r in (False, True)]
        return [table[self._sources] for table in self.per_cell_type(metric)]

    @property
    def _sources(self) -> list[int]:
        return [i for j in range(2, 2 + self.steps) for i in range(j)]  # DARTS alpha row order

    @property
    def _bytes(self) -> int:
        return dtype_bytes(self.memory_dtype or "float32")

    def peak_alpha_costs(self, genotype: Genotype, sharpness: float = 0.02) -> list[np.ndarray]:
        """The gradient side of the derived memory estimate: per alpha group, each op's memory on each edge,
        summed over the group's cells with the weights of a smooth maximum (softmax over every cell's peak and
        the stem's and classifier's, temperature `sharpness` x the largest). A cell far below the peak pulls
        on nothing, and when the stem holds the peak no op can lower it."""
        stem, _, head = network_layout(self.setting, self.steps)
        peaks = np.array([stem, head, *segment_peaks(genotype, self.setting)], dtype=np.float64)
        weights = np.exp((peaks - peaks.max()) / (sharpness * peaks.max()))
        weights = (weights / weights.sum())[2:]
        table = self.entries["memory"]
        return [np.tensordot(weights * (self.reduction == r), table, axes=1)[self._sources] for r in (False, True)]

    def kept_edges(self, genotype: Genotype) -> list[np.ndarray]:
        """Per alpha group: 1 for the supernet edges the genotype keeps, 0 for the dropped ones."""
        masks = []
        for edges in (genotype.normal, genotype.reduce):
            mask = np.zeros(sum(range(2, 2 + self.steps)))
            for k, (_, i) in enumerate(edges):
                j = 2 + k // 2
                mask[j * (j - 1) // 2 - 1 + i] = 1.0  # rows of node j start after 2+3+...+(j-1) edges
            masks.append(mask)
        return masks

    def bounds(self, metric: str) -> tuple[float, float]:
        """Smallest and largest whole-network cost any genotype (no `none`, 2 distinct inputs per node) can have."""
        if metric == "memory":
            low, high = peak_bounds(self.setting, self.steps)
            return float(low * self._bytes), float(high * self._bytes)
        normal, reduce = self.per_cell_type(metric)
        allowed = [k for k, op in enumerate(self.ops) if op != "none"]
        low = high = self.fixed[metric]
        for table in (normal, reduce):
            best = table[:, allowed]
            cheapest, dearest = best.min(axis=1), best.max(axis=1)
            for node in range(2, 2 + self.steps):
                low += np.sort(cheapest[:node])[:2].sum()
                high += np.sort(dearest[:node])[-2:].sum()
        return float(low), float(high)

    def add_metric(self, metric: str, entries: np.ndarray, fixed: float) -> None:
        """Attach another additive metric (e.g. a measured latency table) of the same shape."""
        if entries.shape != self.entries["params"].shape:
            raise ValueError(f"{metric} table has shape {entries.shape}, expected {self.entries['params'].shape}")
        self.entries[metric] = entries
        self.fixed[metric] = fixed


def all_none_genotype(steps: int = 4) -> Genotype:
    """The genotype whose every edge is `none`: its network is exactly the fixed parts."""
    edges = [("none", i) for node in range(2, 2 + steps) for i in (0, 1)]
    return make_genotype(edges, edges, allow_none=True)


def build_cost_table(setting: EvalSetting, steps: int = 4, memory_dtype: str | None = None) -> CostTable:
    """Measure b(o) for every cell, input node and candidate op of the evaluation network `setting` (and
    peak activation memory at `memory_dtype`, when given)."""
    plans = setting.plan(steps)
    shape = (len(plans), steps + 1, len(PRIMITIVES))
    params = np.zeros(shape, dtype=np.int64)
    flops = np.zeros(shape, dtype=np.int64)
    for plan in plans:
        for i in range(steps + 1):
            for o, op in enumerate(PRIMITIVES):
                params[plan.index, i, o], flops[plan.index, i, o] = op_cost(
                    op, plan.channels, plan.stride(i), plan.edge_input_size(i))
    fixed_net = EvalNetwork(all_none_genotype(steps), setting, allow_none=True)
    fixed = measure_network(fixed_net)
    table = CostTable(setting, steps, PRIMITIVES, {"params": params, "flops": flops},
                      {"params": fixed.params, "flops": fixed.flops},
                      np.array([p.reduction for p in plans], dtype=bool))
    if memory_dtype is not None:
        table.memory_dtype = memory_dtype
        table.entries["memory"] = np.array([[[op_extra_elements(plan, i, op) * table._bytes for op in PRIMITIVES]
                                             for i in range(steps + 1)] for plan in plans], dtype=np.int64)
        table.fixed["memory"] = table.bounds("memory")[0]  # the floor the paper-style estimate starts from
    return table
