"""NAS-Bench-201 benchmark tables: read, look up, and fit each device's additive latency model b(o).

Two sources are read:

- the project's CSV (one row per architecture: ``index``, ``arch_str``, ``test_acc_<dataset>``,
  ``latency_ms_<device>``), found at --table, else $DCANAS_NB201_TABLE, else
  ``../shared/data/nb201/nb201_cifar10_hw.csv`` relative to the working directory;
- HW-NAS-Bench's pickle (``{'nasbench201': {dataset: {'<device>_latency': [15,625 values], ...}}}``,
  or the inner per-dataset dict), indexed by NB201's benchmark order.

Latencies are of whole networks, but a differentiable budget needs a cost per edge and op. So for
each device we fit latency ~ intercept + sum over edges of coef[edge, op] by least squares on the
measured architectures (`none` is each edge's reference level, coefficient 0), report how well that
fits, and expose it as an NB201CostTable metric 'latency' (fixed = intercept, entries = coefficients).
"""
from __future__ import annotations

import csv
import functools
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DatasetError
from .arch import (EDGES, NUM_ARCHS, NUM_EDGES, Arch, ArchError, format_arch, index_to_arch,
                                parse_arch, resolve_arch)
from .cost import NB201CostTable, build_nb201_cost_table
from .network import NB201_PRESETS, NB201Setting
from .ops import NONE_INDEX, PRIMITIVES

TABLE_ENV = "DCANAS_NB201_TABLE"
DEFAULT_TABLE = Path("..") / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"
ACCURACY_COLUMNS = {"cifar10": "test_acc_cifar10", "cifar100": "test_acc_cifar100",
                    "imagenet16-120": "test_acc_imagenet16_120"}
LATENCY_PREFIX = "latency_ms_"
# HW-NAS-Bench names its datasets cifar10 / cifar100 / ImageNet (= ImageNet16-120)
HW_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16-120": "ImageNet", "imagenet": "ImageNet"}


class BenchTableError(DatasetError):
    """A benchmark table is missing, corrupt, or lacks the asked-for device or dataset."""


def default_table_path() -> Path:
    """Where the table is looked for: $DCANAS_NB201_TABLE, else ../shared/data/nb201/... from the cwd."""
    env = os.environ.get(TABLE_ENV)
    return Path(env).expanduser() if env else Path.cwd() / DEFAULT_TABLE


@dataclass
class NB201Table:
    """Measured numbers of NB201 architectures: test accuracy per dataset and latency (ms) per device."""

    indices: np.ndarray  # benchmark index of each row
    archs: list[str]  # canonical arch string of each row
    accuracy: dict[str, np.ndarray] = field(default_factory=dict)  # dataset -> [rows], percent
    latency: dict[str, np.ndarray] = field(default_factory=dict)  # device -> [rows], ms
    source: str = ""

    def __post_init__(self) -> None:
        self._row_of_index = {int(i): r for r, i in enumerate(self.indices)}
        # strings are matched against the table's own column, so a table is self-consistent even if
        # its index order were not the benchmark's
        self._row_of_arch = {a: r for r, a in enumerate(self.archs)}
        self._ops: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def devices(self) -> list[str]:
        """Devices with measured latencies."""
        return list(self.latency)

    def check_device(self, device: str) -> str:
        """`device` if the table has it, else a BenchTableError listing the ones it has."""
        if device not in self.latency:
            raise BenchTableError(f"no latencies for device {device!r} in {self.source or 'the table'}; "
                                  f"devices: {', '.join(self.devices)}")
        return device

    def row(self, arch: Arch | str | int) -> int:
        """Row of `arch` (an Arch, arch string or benchmark index) in this table."""
        if isinstance(arch, str) and arch.strip().isdigit():
            arch = int(arch.strip())
        if isinstance(arch, int) and not isinstance(arch, bool):
            if arch not in self._row_of_index:
                raise BenchTableError(f"architecture index {arch} is not in {self.source or 'the table'}")
            return self._row_of_index[arch]
        text = format_arch(resolve_arch(arch))
        if text not in self._row_of_arch:
            raise BenchTableError(f"architecture {text} is not in {self.source or 'the table'}")
        return self._row_of_arch[text]

    def latency_of(self, arch: Arch | str | int, device: str) -> float:
        """Measured latency (ms) of `arch` on `device`."""
        return float(self.latency[self.check_device(device)][self.row(arch)])

    def op_indices(self) -> np.ndarray:
        """[rows, 6] op index (into PRIMITIVES) on each edge of each row's architecture."""
        if self._ops is None:
            self._ops = np.array([parse_arch(a).op_indices for a in self.archs], dtype=np.int64)
        return self._ops

    def lookup(self, arch: Arch | str | int, devices: Iterable[str] | None = None) -> dict[str, Any]:
        """Everything the table knows about `arch`: index, string, test accuracies, latencies."""
        r = self.row(arch)
        wanted = list(devices) if devices is not None else self.devices
        return {"index": int(self.indices[r]), "arch": self.archs[r],
                "test_accuracy": {d: float(v[r]) for d, v in self.accuracy.items()},
                "latency_ms": {d: float(self.latency[self.check_device(d)][r]) for d in wanted}}


def load_nb201_table(path: str | Path | None = None) -> NB201Table:
    """Read the NB201 CSV at `path` (default: default_table_path()); a missing or corrupt file raises BenchTableError."""
    p = Path(os.path.normpath(Path(path).expanduser() if path is not None else default_table_path()))
    if not p.is_file():
        if path is not None:
            where = ""
        elif os.environ.get(TABLE_ENV):
            where = f" (from ${TABLE_ENV})"
        else:
            where = " (the default: ../shared/data/nb201/ relative to the working directory)"
        raise BenchTableError(f"NAS-Bench-201 table not found at {p}{where}; pass --table PATH to the "
                              f"nb201_cifar10_hw.csv file, or set {TABLE_ENV}")
    stat = p.stat()
    return _load_csv(str(p.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_csv(path: str, mtime_ns: int, size: int) -> NB201Table:
    """Parse once per file version (mtime and size are part of the cache key)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise BenchTableError(f"{path} is empty; expected the NAS-Bench-201 CSV with a header row") from None
        rows = list(reader)
    for needed in ("index", "arch_str"):
        if needed not in header:
            raise BenchTableError(f"{path} has no {needed!r} column; is it the NAS-Bench-201 table?")
    col = {name: k for k, name in enumerate(header)}
    numeric = [name for name in header if name in ACCURACY_COLUMNS.values() or name.startswith(LATENCY_PREFIX)]
    values = np.empty((len(rows), len(numeric)), dtype=np.float64)
    indices = np.empty(len(rows), dtype=np.int64)
    archs: list[str] = []
    ops = np.empty((len(rows), NUM_EDGES), dtype=np.int64)
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise BenchTableError(f"{path} line {r + 2} has {len(row)} fields, the header has {len(header)}")
        try:
            indices[r] = int(row[col["index"]])
            values[r] = [float(row[col[name]]) for name in numeric]
        except ValueError:
            raise BenchTableError(f"{path} line {r + 2} has a non-numeric value") from None
        try:
            arch = parse_arch(row[col["arch_str"]])
        except ArchError as exc:
            raise BenchTableError(f"{path} line {r + 2}: {exc}") from None
        archs.append(format_arch(arch))
        ops[r] = arch.op_indices
    if len(set(indices.tolist())) != len(indices):
        raise BenchTableError(f"{path} lists some architecture index twice")
    accuracy = {ds: values[:, numeric.index(c)] for ds, c in ACCURACY_COLUMNS.items() if c in numeric}
    latency = {name[len(LATENCY_PREFIX):]: values[:, k] for k, name in enumerate(numeric)
               if name.startswith(LATENCY_PREFIX)}
    table = NB201Table(indices, archs, accuracy, latency, source=path)
    table._ops = ops
    return table


class _HwPickleLoader(pickle.Unpickler):
    """Unpickles only containers, numbers and numpy arrays: a data file cannot run code when read."""

    _NUMPY = frozenset({"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"})

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in {"dict", "list", "tuple", "set", "frozenset", "float", "int", "str"}:
            return super().find_class(module, name)
        if module.split(".")[0] == "numpy" and name in self._NUMPY:
            return super().find_class(module, name)
        raise BenchTableError(f"the pickle holds a {module}.{name} object; a HW-NAS-Bench file holds only "
                              f"dicts, lists and numbers")


def read_hw_nas_bench_pickle(path: str | Path, dataset: str = "cifar10") -> NB201Table:
    """Latencies (ms) from HW-NAS-Bench's pickle for `dataset`: every '<device>_latency' list of 15,625 values."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BenchTableError(f"HW-NAS-Bench pickle not found at {p}")
    try:
        with open(p, "rb") as f:
            data = _HwPickleLoader(f).load()
    except BenchTableError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle can fail in many ways; each is the same user fault
        raise BenchTableError(f"{p} is not a readable pickle ({exc.__class__.__name__}: {exc})") from None
    if isinstance(data, dict) and "nasbench201" in data:
        data = data["nasbench201"]
    if not isinstance(data, dict):
        raise BenchTableError(f"{p} holds a {type(data).__name__}; expected a dict keyed by dataset")
    key = HW_DATASETS.get(dataset.lower(), dataset)
    matches = [k for k in data if isinstance(k, str) and k.lower() == key.lower()]
    if not matches:
        raise BenchTableError(f"{p} has no dataset {dataset!r}; it has: {', '.join(map(str, data))}")
    metrics = data[matches[0]]
    latency: dict[str, np.ndarray] = {}
    for name, values in metrics.items():
        if not (isinstance(name, str) and name.endswith("_latency")):
            continue
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(arr) != NUM_ARCHS:
            raise BenchTableError(f"{p}: {matches[0]}/{name} has {len(arr)} values, expected {NUM_ARCHS} "
                                  f"(one per NAS-Bench-201 architecture)")
        latency[name[: -len("_latency")]] = arr
    if not latency:
        raise BenchTableError(f"{p}: {matches[0]} has no '<device>_latency' entries")
    indices = np.arange(NUM_ARCHS)
    return NB201Table(indices, [format_arch(index_to_arch(i)) for i in range(NUM_ARCHS)], {}, latency,
                      source=f"{p} [{matches[0]}]")


def load_any_table(path: str | Path | None = None, dataset: str = "cifar10") -> NB201Table:
    """The CSV, or a HW-NAS-Bench pickle when `path` ends in .pickle/.pkl."""
    if path is not None and str(path).endswith((".pickle", ".pkl")):
        return read_hw_nas_bench_pickle(path, dataset)
    return load_nb201_table(path)


# -- the additive latency model ----------------------------------------------------------------

def design_matrix(op_indices: np.ndarray) -> np.ndarray:
    """[n, 1 + 6*4]: a column of ones, then one-hot(op) per edge with `none` as the dropped level."""
    op_indices = np.asarray(op_indices)
    others = [o for o in range(len(PRIMITIVES)) if o != NONE_INDEX]
    cols = [np.ones(len(op_indices))]
    for e in range(NUM_EDGES):
        cols.extend((op_indices[:, e] == o).astype(np.float64) for o in others)
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class LatencyModel:
    """latency(arch) ~ intercept + sum_e coef[e, op_e], fitted to one device's measurements."""

    device: str
    intercept: float
    coef: np.ndarray  # [6 edges, 5 ops], 0 in the `none` column
    r2: float
    mean_rel_error: float
    median_rel_error: float
    max_abs_error: float
    n: int
    domain: str  # "all" (every measured arch) or "no-none" (fitted and meaningful only on none-free archs)

    def predict(self, arch: Arch | str | int) -> float:
        """Predicted latency (ms) of `arch`."""
        picks = resolve_arch(arch).op_indices
        return float(self.intercept + sum(self.coef[e, o] for e, o in enumerate(picks)))

    def predict_many(self, op_indices: np.ndarray) -> np.ndarray:
        """Predictions for [n, 6] op indices."""
        return self.intercept + self.coef[np.arange(NUM_EDGES)[None, :], np.asarray(op_indices)].sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (fit statistics and coefficients)."""
        return {"device": self.device, "r2": self.r2, "mean_rel_error": self.mean_rel_error,
                "median_rel_error": self.median_rel_error, "max_abs_error_ms": self.max_abs_error,
                "n": self.n, "domain": self.domain, "intercept_ms": self.intercept,
                "coef_ms": {f"{j}<-{i}": dict(zip(PRIMITIVES, row)) for (i, j), row in zip(EDGES, self.coef.tolist())}}


def fit_latency_model(table: NB201Table, device: str, *, exclude_none: bool = False) -> LatencyModel:
    """Least-squares additive model of `device`'s latency over the table's archs (or only none-free ones)."""
    return latency_fit_table(table, [device], exclude_none=exclude_none)[0]


def latency_fit_table(table: NB201Table, devices: Iterable[str] | None = None, *,
                      exclude_none: bool = False) -> list[LatencyModel]:
    """The fitted model (with R², mean and median relative error) of every device, or of `devices`."""
    names = [table.check_device(d) for d in (devices or table.devices)]
    ops = table.op_indices()
    keep = (ops != NONE_INDEX).all(axis=1) if exclude_none else np.ones(len(ops), dtype=bool)
    X = design_matrix(ops[keep])
    Y = np.stack([table.latency[d][keep] for d in names], axis=1)
    if len(Y) < X.shape[1]:
        raise BenchTableError(f"{len(Y)} measured architectures cannot fit {X.shape[1]} latency coefficients")
    # one factorisation for all devices. Without `none` rows (exclude_none) each edge's one-hot columns
    # sum to the intercept column, so the split between intercept and coefficients is lstsq's
    # minimum-norm one: predictions of none-free archs are unique, those of archs with `none` are not
    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    others = [o for o in range(len(PRIMITIVES)) if o != NONE_INDEX]
    models = []
    for k, device in enumerate(names):
        y, b = Y[:, k], beta[:, k]
        resid = y - X @ b
        ss_tot = float(((y - y.mean()) ** 2).sum())
        rel = np.abs(resid) / np.abs(y)
        coef = np.zeros((NUM_EDGES, len(PRIMITIVES)))
        coef[:, others] = b[1:].reshape(NUM_EDGES, len(others))
        models.append(LatencyModel(device, float(b[0]), coef,
                                   1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot else 1.0,
                                   float(rel.mean()), float(np.median(rel)), float(np.abs(resid).max()),
                                   len(y), "no-none" if exclude_none else "all"))
    return models


def by_enumeration(table: NB201Table, column: np.ndarray) -> np.ndarray:
    """A per-row column of `table` as a [15,625] array in enumeration order (NaN where the table has no row)."""
    values = np.full(NUM_ARCHS, np.nan)
    ops = table.op_indices()
    enum = (ops * (len(PRIMITIVES) ** np.arange(NUM_EDGES - 1, -1, -1))[None, :]).sum(axis=1)
    values[enum] = column
    return values


def measured_by_enumeration(table: NB201Table, device: str) -> np.ndarray:
    """`device`'s measured latencies as a [15,625] array in enumeration order (NaN where the table has no row)."""
    return by_enumeration(table, table.latency[table.check_device(device)])


def share_beaten(accuracy: float, population: np.ndarray) -> float:
    """Percent of `population` that `accuracy` beats, ties counted half (a random pick's percentile)."""
    population = population[~np.isnan(population)]
    below = np.count_nonzero(population < accuracy - 1e-9)
    ties = np.count_nonzero(np.abs(population - accuracy) <= 1e-9)
    return 100.0 * (below + 0.5 * ties) / max(len(population), 1)


def standing_in(table: NB201Table, arch: Arch | str | int, candidates: np.ndarray) -> dict[str, Any]:
    """How `arch` ranks among `candidates` ([15,625] bool, enumeration order) on each dataset of `table`: the share
    of them it beats, what a random one scores on average, and the best of them (the sceptic's random baseline)."""
    found = table.lookup(arch)["test_accuracy"]
    out: dict[str, Any] = {"cells": int(candidates.sum()), "beats_pct": {}, "random_mean": {}, "best": {}}
    for dataset, column in table.accuracy.items():
        population = by_enumeration(table, column)[candidates]
        population = population[~np.isnan(population)]
        if len(population) == 0:
            continue
        out["beats_pct"][dataset] = round(share_beaten(found[dataset], population), 2)
        out["random_mean"][dataset] = round(float(population.mean()), 4)
        out["best"][dataset] = round(float(population.max()), 4)
    return out


def latency_cost_table(device: str, table: NB201Table | str | Path | None = None, *,
                       setting: NB201Setting | None = None, exclude_none: bool = False,
                       flops_convention: str = "macs", measured: bool = False) -> NB201CostTable:
    """The NB201 cost table (params, FLOPs) with metric 'latency' for `device`: fixed = intercept, entries = coefficients.

    `table` is an NB201Table or a path (default: the CSV at default_table_path()). With `exclude_none`
    the model is fitted to (and only meaningful for) the none-free archs derive() returns by default.
    With `measured` the table's own measurements are attached too: the cost of an architecture (and
    the budget range) is then its measured latency, and the fitted model only gives the gradient.
    """
    setting = setting or NB201_PRESETS["cifar10"]
    bench_net = NB201_PRESETS["cifar10"]
    if (setting.channels, setting.cells_per_stage, setting.image_size) != (
            bench_net.channels, bench_net.cells_per_stage, bench_net.image_size):
        raise ConfigError("NB201 latencies were measured on the benchmark's CIFAR-10 network (16 channels, "
                          "5 cells per stage, 32x32 input); a latency budget needs that setting")
    bench = table if isinstance(table, NB201Table) else load_any_table(table)
    model = fit_latency_model(bench, device, exclude_none=exclude_none)
    cost = build_nb201_cost_table(setting, flops_convention)
    cost.add_per_edge_metric("latency", model.coef, model.intercept,
                             note=f"{device}: additive least-squares model, R2 {model.r2:.4f} over "
                                  f"{model.n} archs ({model.domain}), ms")
    if measured:
        cost.attach_measured("latency", measured_by_enumeration(bench, device),
                             note=f"costs and bounds are the measured latencies of {bench.source}")
    return cost
