"""Per-op latency tables: every candidate op at every position of an evaluation network, timed on this device.

The table lives in the same index space as `CostTable.entries` -- [cell, input node, op] -- so that
`fixed + sum of the ops a genotype selects` predicts the whole network's latency, and the search can
constrain latency exactly as it constrains params and FLOPs (`--max-latency` with `--latency-table`).

How each number is obtained (`dcanas profile --ops`):

- An op's latency depends only on (op, channels, stride, input size), so each distinct combination is
  exported alone to ONNX and timed once; the many positions sharing it reuse the figure.
- Each op is timed in the context the network gives it (see `InContext`): between a 1x1 conv and a
  global average pool, minus the same graph without the op. Timed alone, an op would also pay a
  session run's overhead and onnxruntime's layout conversions, which the network pays once.
- `none` is 0 (a genotype never selects it), and so is `skip_connect` at stride 1: it is the identity,
  and the exported network holds no node for it.
- The fixed part (stems, cell preprocessing, node sums, concatenations, classifier) is the network of
  `cost.all_none_genotype()`. Its `none` edges are not timed as they are: PyTorch's exporter and
  onnxruntime merge identical computations, which would fold a cell's four identical `none`-fed nodes
  (and their additions) into one. Each `none` is therefore swapped for a cheap placeholder with its
  own weights, which nothing merges, and the placeholders' cost is taken out by timing the same network
  with every placeholder doubled (two in series), interleaved with it: fixed = 2 x single - double.
  Both are whole networks timed in the same rounds, so a load that slows the machine slows both alike
  and the difference keeps its sign (subtracting placeholders timed apart, at another moment, did not:
  under load it could drive a small network's fixed part below zero).

- Calibration (`calibrate=K`, `dcanas profile --ops --calibrate K`): ops timed apart run with their
  data hot in cache, and inside a whole network the same kernels run slower. K random networks are
  timed whole and the op entries scaled by the one least-squares factor that fits them
  (`calibration_scale`); the factor and the raw figures are recorded in the table.

Known limits of the additive model: the exporter merges parameter-free ops that read the same node
(two max_pool_3x3 from node 0, or the ReLUs that open two convs on one input), which the table counts
twice, and onnxruntime's fusions depend on an op's neighbours. `benchmarks/latency_fidelity.py`
measures how well the sum predicts whole networks.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cost import CostTable, all_none_genotype
from ...errors import ConfigError
from ...profile import (DEFAULT_PROVIDER, DEFAULT_ROUNDS, DEFAULT_THREADS, DEFAULT_WARMUP, LatencyStats, device_info,
                        measure_modules)
from ...runs import write_json
from .genotype import Genotype, genotype_to_text, random_genotype
from .network import EvalNetwork, EvalSetting
from .ops import PRIMITIVES, Zero, make_op

LATENCY_FORMAT = "dcanas-latency-table/1"
DEFAULT_OP_RUNS = 200  # ops take microseconds: more runs cost little and steady the medians
DEFAULT_NETWORK_RUNS = 50
DEFAULT_CALIBRATION = 8
CALIBRATION_SEED = 1000  # not 0: benchmarks draw their test genotypes from seed 0
# Fields of the setting that do not change what runs at inference (the auxiliary head never runs).
_IGNORED_FIELDS = ("auxiliary",)


@dataclass
class LatencyTable:
    """Measured latency (ms) of each candidate op at each [cell, input node] position, plus the fixed part."""

    setting: EvalSetting
    steps: int
    ops: tuple[str, ...]
    entries: np.ndarray  # [cells, steps + 1, ops], ms
    fixed: float  # ms
    batch_size: int = 1
    device: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    measurements: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what `save` writes)."""
        return {"format": LATENCY_FORMAT, "metric": "latency", "units": "ms", "setting": self.setting.to_dict(),
                "steps": self.steps, "ops": list(self.ops), "batch_size": self.batch_size,
                "fixed": self.fixed, "entries": self.entries.tolist(), "device": self.device,
                "method": self.method, "measurements": self.measurements}

    def save(self, path: str | Path) -> Path:
        """Write the table atomically as JSON."""
        path = Path(path)
        write_json(path, self.to_dict())
        return path


class _Placeholder(nn.Conv2d):
    """Stands in for `none` when timing the fixed part: a depthwise 1x1 conv (one multiply per output value).

    Its own weights keep any two from being merged, and, unlike `x * 0`, it runs in onnxruntime's
    blocked layout and takes the node's sum into itself as real ops do, so the rest of the network
    runs as it does for a real genotype.
    """

    def __init__(self, channels: int, stride: int):
        super().__init__(channels, channels, 1, stride=stride, groups=channels, bias=False)


class InContext(nn.Module):
    """An op timed as the network runs it: fed by a 1x1 conv, read by a global average pool.

    onnxruntime's CPU provider keeps whole DARTS networks in its blocked NCHWc layout (convs, pools,
    sums and concatenations all run in it), but an op exported alone pays a layout conversion into and
    out of that layout, as much as the op itself for small ops: timed alone, a sep_conv_3x3 at 16
    channels, 32x32 costs 26 us, against 19-20 us as the marginal cost of one more in a chain. Between
    a conv and a pool (both NCHWc) the conversions happen outside the op; timing the same graph without
    the op (`op=None`) and subtracting removes them, the conv, the pool and the session-run overhead.
    (A stride-2 op's pool reads a quarter of the pixels, which makes it look up to ~1 us cheaper.)
    """

    def __init__(self, op: nn.Module | None, channels: int):
        super().__init__()
        self.pre = nn.Conv2d(channels, channels, 1, bias=False)
        self.op = op

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.pre(x)
        # a second reader of the op's input, as a node of a cell always has (the concatenation):
        # without it onnxruntime would fuse the op's leading ReLU into the conv and time it as free
        other = F.adaptive_max_pool2d(y, 1)
        if self.op is not None:
            y = self.op(y)
        return F.adaptive_avg_pool2d(y, 1), other


def fixed_network(setting: EvalSetting, steps: int = 4, placeholders: int = 1) -> EvalNetwork:
    """The all-`none` network with each `none` swapped for `placeholders` distinct placeholders in series."""
    net = EvalNetwork(all_none_genotype(steps), setting, allow_none=True)
    for cell, plan in zip(net.cells, setting.plan(steps)):
        for k, index in enumerate(cell.indices):
            assert isinstance(cell.ops[k], Zero)
            chain = [_Placeholder(plan.channels, plan.stride(index))]
            chain += [_Placeholder(plan.channels, 1) for _ in range(placeholders - 1)]
            cell.ops[k] = chain[0] if placeholders == 1 else nn.Sequential(*chain)
    return net.eval()


def _is_free(op: str, stride: int) -> bool:
    """Ops whose latency is 0 by construction (see the module docstring)."""
    return op == "none" or (op == "skip_connect" and stride == 1)


def measure_latency_table(setting: EvalSetting, *, steps: int = 4, batch_size: int = 1,
                          threads: int = DEFAULT_THREADS, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_OP_RUNS,
                          rounds: int = DEFAULT_ROUNDS, calibrate: int = 0, calibration_seed: int = CALIBRATION_SEED,
                          network_runs: int = DEFAULT_NETWORK_RUNS, exporter: str = "auto",
                          progress: bool = True, provider: str = DEFAULT_PROVIDER, int8: bool = False
                          ) -> LatencyTable:
    """Time every distinct (op, channels, stride, input size) of `setting` once, and the fixed part; build the table.

    With `calibrate` > 0, also time that many random whole networks and scale the op entries by the one
    factor that best fits them (see `calibration_scale`); the raw figures stay in the table.
    """
    plans = setting.plan(steps)
    # every distinct thing to time, keyed; each position then looks its figure up
    keys: list[tuple] = []

    def want(key: tuple) -> None:
        if key not in keys:
            keys.append(key)

    for plan in plans:
        for i in range(steps + 1):
            c, stride, size = plan.channels, plan.stride(i), plan.edge_input_size(i)
            want(("base", c, 1, size))
            for op in PRIMITIVES:
                if not _is_free(op, stride):
                    want((op, c, stride, size))

    def module_for(key: tuple) -> nn.Module:
        op, c, stride, _ = key  # weights stay random: latency does not depend on their values
        return InContext(None if op == "base" else make_op(op, c, stride), c)

    generator = torch.Generator().manual_seed(0)
    jobs = [(module_for(k), torch.randn(batch_size, k[1], k[3], k[3], generator=generator)) for k in keys]
    started = time.time()
    stats = measure_modules(jobs, threads=threads, warmup=warmup, runs=runs, rounds=rounds, exporter=exporter,
                            progress=progress, desc="profile ops", provider=provider, int8=int8)
    measured: dict[tuple, LatencyStats] = dict(zip(keys, stats))

    def net_cost(key: tuple) -> float:
        """Median latency of the op in context minus that of the context alone, never below 0."""
        _, c, _, size = key
        return max(0.0, measured[key].median_ms - measured[("base", c, 1, size)].median_ms)

    entries = np.zeros((len(plans), steps + 1, len(PRIMITIVES)), dtype=np.float64)
    for plan in plans:
        for i in range(steps + 1):
            for o, op in enumerate(PRIMITIVES):
                stride = plan.stride(i)
                if not _is_free(op, stride):
                    entries[plan.index, i, o] = net_cost((op, plan.channels, stride, plan.edge_input_size(i)))

    # whole networks: the fixed part (single and doubled placeholders), and the calibration genotypes,
    # timed together, interleaved
    rng = random.Random(calibration_seed)
    genotypes = [random_genotype(rng, steps) for _ in range(calibrate)]
    networks = [fixed_network(setting, steps, 1), fixed_network(setting, steps, 2)]
    for g in genotypes:
        networks.append(EvalNetwork(g, setting).eval())
    x = torch.randn(batch_size, setting.in_channels, setting.image_size, setting.image_size, generator=generator)
    whole = measure_modules([(n, x) for n in networks], threads=threads, warmup=max(2, warmup // 2),
                            runs=network_runs, rounds=rounds, exporter=exporter, progress=progress,
                            desc="profile networks", provider=provider, int8=int8)
    single, double = whole[0], whole[1]
    placeholders = double.median_ms - single.median_ms
    fixed = max(0.0, single.median_ms - placeholders)

    rows = []
    for key in keys:
        op, c, stride, size = key
        st = measured[key]
        rows.append({"op": op, "channels": c, "stride": stride, "input_size": size, "median_ms": st.median_ms,
                     "p10_ms": st.p10_ms, "p90_ms": st.p90_ms, "iqr_ms": st.iqr_ms,
                     "latency_ms": None if op == "base" else net_cost(key)})
    for name, st in (("fixed_network (all-none, placeholders)", single),
                     ("fixed_network (all-none, placeholders doubled)", double)):
        rows.append({"op": name, "median_ms": st.median_ms, "p10_ms": st.p10_ms, "p90_ms": st.p90_ms,
                     "iqr_ms": st.iqr_ms})
    rows[-2].update(placeholders_ms=placeholders, latency_ms=fixed)
    method: dict[str, Any] = {
        "statistic": "median", "warmup": warmup, "runs": runs, "network_runs": network_runs, "rounds": rounds,
        "batch_size": batch_size, "exporter": exporter,
        "context": "1x1 conv -> op -> global pools, minus the same without the op",
        "fixed": "2 x all-none network with placeholders - the same with placeholders doubled",
        "zero_by_construction": ["none", "skip_connect at stride 1"], "op_scale": 1.0}
    device = device_info(threads, provider, "int8" if int8 else "float32")
    table = LatencyTable(setting, steps, tuple(PRIMITIVES), entries, fixed, batch_size, device, method, rows)
    if genotypes:
        measured_ms = [w.median_ms for w in whole[2:]]
        scale = calibration_scale(table, genotypes, measured_ms)
        table.entries = entries * scale
        method["op_scale"] = scale
        method["calibration"] = {
            "networks": len(genotypes), "seed": calibration_seed,
            "genotypes": [genotype_to_text(g) for g in genotypes], "measured_ms": measured_ms,
            "note": "op entries = raw in-context op latency x op_scale, the least-squares fit of "
                    "measured = fixed + op_scale x sum(raw entries) over these random networks"}
    method["seconds"] = round(time.time() - started, 1)
    method["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return table


def op_sum(table: LatencyTable, genotype: Genotype) -> float:
    """Sum of the table's op entries a genotype selects (no fixed part)."""
    total = 0.0
    for plan in table.setting.plan(table.steps):
        for op, index in (genotype.reduce if plan.reduction else genotype.normal):
            total += float(table.entries[plan.index, index, table.ops.index(op)])
    return total


def calibration_scale(table: LatencyTable, genotypes: list[Genotype], measured_ms: list[float]) -> float:
    """The factor s minimising sum (measured - fixed - s * op_sum)^2 over whole networks timed on this device.

    Ops timed in isolation run with their data hot in cache; in a whole network each kernel finds
    less of it there and runs slower (about 30-40% for convs on the machine this was written on, by
    onnxruntime's per-node profile), so a single measured factor corrects the bias of the op entries.
    """
    sums = np.array([op_sum(table, g) for g in genotypes])
    targets = np.array(measured_ms) - table.fixed
    if not (sums > 0).any():
        return 1.0
    scale = float(sums @ targets / (sums @ sums))
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def _bad(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{path} is not a usable latency table ({why}); measure one with `dcanas profile --ops`")


def load_latency_table(path: str | Path) -> LatencyTable:
    """Read and validate a table written by `measure_latency_table(...).save()`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"no latency table at {path}; measure one with `dcanas profile --ops --out {path}`")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"unreadable JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != LATENCY_FORMAT:
        raise _bad(path, f"expected format {LATENCY_FORMAT!r}")
    if data.get("units") != "ms":
        raise _bad(path, f"units are {data.get('units')!r}, expected 'ms'")
    try:
        setting = EvalSetting(**data["setting"])
        steps = int(data["steps"])
        ops = tuple(data["ops"])
        entries = np.asarray(data["entries"], dtype=np.float64)
        fixed = float(data["fixed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"missing or malformed field: {exc}") from None
    if ops != PRIMITIVES:
        raise _bad(path, f"its ops {list(ops)} are not this version's {list(PRIMITIVES)}")
    expected = (setting.cells, steps + 1, len(PRIMITIVES))
    if entries.shape != expected:
        raise _bad(path, f"entries have shape {list(entries.shape)}, expected {list(expected)}")
    if not (np.isfinite(entries).all() and (entries >= 0).all() and math.isfinite(fixed) and fixed >= 0):
        raise _bad(path, "it holds negative or non-finite latencies")
    return LatencyTable(setting, steps, ops, entries, fixed, int(data.get("batch_size", 1)),
                        data.get("device", {}), data.get("method", {}), data.get("measurements", []))


def _describe(s: EvalSetting) -> str:
    return (f"{s.style} stem, {s.cells} cells x {s.channels} channels, {s.in_channels}x{s.image_size}x{s.image_size} "
            f"input, {s.num_classes} classes")


def check_table_matches(latency: LatencyTable, setting: EvalSetting, steps: int, where: str = "the latency table"
                        ) -> None:
    """Refuse a table measured for another evaluation network: the figures would describe another network."""
    mine = {k: v for k, v in latency.setting.to_dict().items() if k not in _IGNORED_FIELDS}
    theirs = {k: v for k, v in setting.to_dict().items() if k not in _IGNORED_FIELDS}
    if mine != theirs or latency.steps != steps:
        differ = [k for k in theirs if mine.get(k) != theirs[k]] or ["steps"]
        flags = " ".join(f"--{k.replace('_', '-').replace('num-classes', 'classes')} {theirs[k]}"
                         for k in differ if k != "steps")
        raise ConfigError(f"{where} was measured for another evaluation network ({_describe(latency.setting)}) "
                          f"than this one ({_describe(setting)}; differs in {', '.join(differ)}); measure one for "
                          f"it with `dcanas profile --ops {flags}`".rstrip())


def attach_latency_table(table: CostTable, path: str | Path) -> LatencyTable:
    """Validate the latency table at `path` against `table`'s setting and add it as the 'latency' metric."""
    latency = load_latency_table(path)
    check_table_matches(latency, table.setting, table.steps, where=f"latency table {path}")
    table.add_metric("latency", latency.entries.copy(), latency.fixed)
    return latency
