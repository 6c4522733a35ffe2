"""The look-up graph (LUG, DCA-NAS sec. 3.2 and appendix B): build, fit, look up, plot.

The paper's constraint (eq. 3) prices the softmax-weighted supernet, not the network that is
derived from it, so a search run at budget K_d' ends at some other derived size K_d. A LUG runs
independent searches at several search budgets K_d' (in parallel: local processes or Ray), records
the exact size K_d of each unrepaired derived network, fits a monotone (isotonic) curve K_d(K_d'),
and inverts it: a device budget K_d is searched at the largest K_d' whose fitted K_d fits in it.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .constraint import CONSTRAINT_MODES, UNITS, Budget
from .errors import DcanasError
from .units import human, readable
from .runs import (CHECKPOINT, atomic_write_bytes, atomic_write_text, prepare_run_dir, stopped_before_checkpoint,
                   write_json)
from .threads import available_cores

LUG_FORMAT = "dcanas-lug"
LUG_VERSION = 1
LUG_METRICS = ("params", "flops", "memory")
LUG_FILE = "lug.json"
LUG_PLOT = "lug.png"
BUILD_FILE = "build.json"
EXECUTORS = ("local", "ray")
COLLECTED_MAX_BYTES = 8 << 20  # files a remote search sends back to the head (not its checkpoint)

# Search options that shape the K_d' -> K_d curve: a search that differs in them is told so.
CURVE_OPTIONS = ("cells", "channels", "bottleneck", "weight_sharing", "derived_cells", "epochs", "batch_size",
                 "lr", "momentum", "weight_decay", "arch_lr", "arch_weight_decay", "lambda_lr", "max_steps")
# Fields that define the deployed network: a LUG is refused by a search that differs in one.
SETTING_FIELDS = ("style", "cells", "channels", "num_classes", "in_channels", "image_size", "auxiliary")


class LugError(DcanasError):
    """A look-up graph file is missing, malformed, or belongs to another dataset, metric or network."""


@dataclass
class LugPoint:
    """One search of the LUG: its search budget K_d' and the exact size K_d of its unrepaired derived network."""

    search_budget: float
    seed: int
    derived: float
    genotype: str
    val_acc: float | None = None
    search_size: float | None = None  # the paper's k_s at the end: above search_budget = not converged
    steps: int = 0
    seconds: float = 0.0
    run_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def fit_monotone(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Knots of the non-decreasing isotonic fit of y on x; the fitted curve is linear between them.

    Points sharing an x (several seeds) are averaged by the fit itself.
    """
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(increasing=True).fit(np.asarray(x, float), np.asarray(y, float))
    return np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float)


def invert_monotone(knots_x: np.ndarray, knots_y: np.ndarray, value: float) -> float:
    """The largest x whose piecewise-linear fitted y is <= value (value >= knots_y[0]; clamped at the top)."""
    if value >= knots_y[-1]:
        return float(knots_x[-1])
    j = int(np.argmax(knots_y > value))  # first knot above value; j >= 1 because knots_y[0] <= value
    x0, x1, y0, y1 = knots_x[j - 1], knots_x[j], knots_y[j - 1], knots_y[j]
    return float(x0 + (value - y0) / (y1 - y0) * (x1 - x0))


@dataclass
class Lug:
    """A fitted look-up graph for one dataset, metric, deployed network and search configuration."""

    dataset: str
    metric: str
    setting: dict[str, Any]
    search_config: dict[str, Any]
    points: list[LugPoint]
    bounds: tuple[float, float]
    constraint: str = "paper"
    created: str = ""
    knots_x: np.ndarray = field(init=False, repr=False)
    knots_y: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len({p.search_budget for p in self.points}) < 2:
            raise LugError("a look-up graph needs searches at two or more different search budgets")
        self.knots_x, self.knots_y = fit_monotone([p.search_budget for p in self.points],
                                                  [p.derived for p in self.points])

    @property
    def unit(self) -> str:
        """The metric's unit in words."""
        return UNITS.get(self.metric, "")

    def fitted(self, search_budget: float | np.ndarray) -> float | np.ndarray:
        """Fitted derived size K_d at search budget(s) K_d' (constant beyond the searched range)."""
        out = np.interp(search_budget, self.knots_x, self.knots_y)
        return float(out) if np.ndim(out) == 0 else out

    def lookup(self, device_budget: float) -> float:
        """K_d' for a device budget K_d: the largest search budget whose fitted derived size is <= K_d."""
        if device_budget < self.knots_y[0]:
            raise LugError(
                f"a {self.metric} budget of {readable(device_budget)} is below the smallest derived size this look-up "
                f"graph reached ({readable(self.knots_y[0])} at search budget {readable(self.knots_x[0])}); rebuild it with "
                f"smaller --search-budgets or raise the budget")
        return invert_monotone(self.knots_x, self.knots_y, device_budget)

    def search_budgets(self, budgets: list[Budget]) -> dict[str, float]:
        """{metric: K_d'} for the device budgets of a search (the LUG's metric only)."""
        self._check_metrics(budgets)
        return {b.metric: self.lookup(b.limit) for b in budgets if b.metric == self.metric}

    def _check_metrics(self, budgets: list[Budget]) -> None:
        metrics = [b.metric for b in budgets]
        if self.metric not in metrics:
            raise LugError(f"this look-up graph maps --max-{self.metric} budgets, and the search has "
                           f"{' '.join('--max-' + m for m in metrics) or 'no budget'}; give --max-{self.metric}")
        others = [m for m in metrics if m != self.metric]
        if others:
            # the paper's k_s is uncalibrated without a LUG, so an unmapped budget would be missed silently
            raise LugError(f"this look-up graph maps {self.metric} only; drop --max-{others[0]} or search it "
                           f"without --lug (the default 'derived' constraint needs no look-up graph)")

    def check_config(self, config: Any, log: Callable[[str], None] | None = None) -> None:
        """Refuse a search this LUG does not describe (dataset, metric, deployed network); note softer mismatches."""
        if config.dataset.lower() != self.dataset.lower():
            raise LugError(f"this look-up graph was built for dataset {self.dataset!r}, not {config.dataset!r}; "
                           f"build one with `dcanas lug build --dataset {config.dataset}`")
        self._check_metrics(config.budgets())
        setting = resolved_setting(config)
        differ = [f"{k} {setting[k]} (LUG: {self.setting.get(k)})" for k in SETTING_FIELDS
                  if setting.get(k) != self.setting.get(k)]
        if differ:
            raise LugError(f"this look-up graph was built for another evaluation network: {', '.join(differ)}; "
                           f"pass the LUG's --cells/--channels or build a LUG for this network")
        if log is None:
            return
        changed = [f"{k}={getattr(config, k)} (LUG: {self.search_config.get(k)})" for k in CURVE_OPTIONS
                   if k in self.search_config and getattr(config, k) != self.search_config[k]]
        if changed:
            log(f"note: the look-up graph was built with other search options ({', '.join(changed)}); "
                f"its mapping is exact only for the search it was built with")
        for b in config.budgets():
            if b.metric == self.metric and b.limit > self.knots_y[-1]:
                log(f"note: {b.metric} budget {readable(b.limit)} is above the largest derived size the look-up graph "
                    f"reached ({readable(self.knots_y[-1])}); searching at its largest search budget "
                    f"{readable(self.knots_x[-1])}, so the network may come out smaller than allowed")

    def unconverged(self, tolerance: float = 0.02) -> list[LugPoint]:
        """Points whose search ended with k_s more than `tolerance` above its search budget."""
        return [p for p in self.points
                if p.search_size is not None and p.search_size > (1 + tolerance) * p.search_budget]

    def to_dict(self) -> dict[str, Any]:
        """The JSON file's content (the fit is stored for readers; loading refits it from the points)."""
        return {"format": LUG_FORMAT, "version": LUG_VERSION, "dataset": self.dataset, "metric": self.metric,
                "unit": self.unit, "constraint": self.constraint, "setting": self.setting,
                "bounds": list(self.bounds), "search_config": self.search_config,
                "points": [p.to_dict() for p in self.points],
                "fit": {"search_budget": self.knots_x.tolist(), "derived": self.knots_y.tolist(),
                        "method": "isotonic (increasing), linear between knots"},
                "created": self.created}

    @classmethod
    def from_dict(cls, data: Any, where: str = "look-up graph") -> "Lug":
        """Validate and build; anything malformed is one LugError naming `where`."""
        if not isinstance(data, dict) or data.get("format") != LUG_FORMAT:
            raise LugError(f"{where} is not a dcanas look-up graph (no \"format\": \"{LUG_FORMAT}\"); "
                           f"build one with `dcanas lug build`")
        if data.get("version") != LUG_VERSION:
            raise LugError(f"{where} has look-up graph format version {data.get('version')!r}, this dcanas reads "
                           f"version {LUG_VERSION}; rebuild it with `dcanas lug build`")
        try:
            if data["metric"] not in LUG_METRICS:
                raise ValueError(f"metric {data['metric']!r} is not one of {LUG_METRICS}")
            if data.get("constraint", "paper") not in CONSTRAINT_MODES:
                raise ValueError(f"constraint {data['constraint']!r} is not one of {CONSTRAINT_MODES}")
            points = [LugPoint(**p) for p in data["points"]]
            for p in points:
                if not (math.isfinite(p.search_budget) and math.isfinite(p.derived)) or p.search_budget <= 0:
                    raise ValueError(f"point {p.search_budget!r} -> {p.derived!r} is not a positive finite size")
            low, high = (float(v) for v in data["bounds"])
            if not isinstance(data["setting"], dict) or not isinstance(data["search_config"], dict):
                raise ValueError("setting and search_config must be objects")
            return cls(str(data["dataset"]), data["metric"], data["setting"], data["search_config"], points,
                       (low, high), str(data.get("constraint", "paper")), str(data.get("created", "")))
        except LugError as exc:
            raise LugError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise LugError(f"{where} is a malformed look-up graph ({reason}); rebuild it with `dcanas lug build`") \
                from None

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically."""
        write_json(Path(path), self.to_dict())


def load_lug(path: str | Path) -> Lug:
    """Read and validate a LUG file (or a `lug build` run folder holding lug.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / LUG_FILE
    if not path.is_file():
        raise LugError(f"no look-up graph at {path}; build one with `dcanas lug build`")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise LugError(f"{path} is not valid JSON ({exc}); it may be truncated, rebuild it with `dcanas lug build`") \
            from None
    return Lug.from_dict(data, str(path))


def resolved_setting(config: Any) -> dict[str, Any]:
    """The deployed network a search config describes, as a dict (loads the dataset for its shape)."""
    from .data import load_dataset
    from .spaces import SPACES

    data = load_dataset(config.dataset, config.data_dir, image_size=config.image_size, data_mode=config.data_mode)
    space = SPACES.get(config.space)
    return space.eval_setting(config, data.in_channels, data.num_classes, data.image_size).to_dict()


# -- building ---------------------------------------------------------------------------------------------------

def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """One search in this process (a pool or Ray worker): fresh, resumed, or read back when already finished.

    `task` holds `config` (a SearchConfig dict), `run_dir` and `threads`, optionally `device` (this worker's
    GPU) and `collect` (send the run folder's small files back, for a head whose disk the worker cannot
    see); any other keys come back unchanged. Returns {"task": task, "result": the run's result.json,
    "metrics": the last epoch's metrics row, "val_acc": its alpha-batch accuracy[, "files": {name: bytes}]}.
    """
    from .search_config import SearchConfig
    from .search_loop import run_search

    global _stopped
    if _stopped:  # a pool worker that was interrupted starts none of the searches still queued to it
        raise KeyboardInterrupt("not started: the build was interrupted")
    # every executor runs a search on the same thread count, so the same seed gives the same network
    config = SearchConfig.from_dict({**task["config"], "threads": task["threads"],
                                     **({"device": task["device"]} if task.get("device") else {})})
    run_dir = Path(task["run_dir"])
    if not (run_dir / "result.json").is_file():
        resume = (run_dir / CHECKPOINT).is_file()
        if not resume and stopped_before_checkpoint(run_dir):
            shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing in it to keep, start afresh
        try:
            run_search(config, run_dir, resume=resume, progress=False, log=lambda message: None)
        except KeyboardInterrupt:  # run_search checkpointed at a step boundary first
            _stopped = _in_pool
            raise
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else []
    metrics = history[-1]["metrics"] if history else {}
    answer = {"task": task, "result": json.loads((run_dir / "result.json").read_text()), "metrics": metrics,
              "val_acc": metrics.get("val_acc")}
    if task.get("collect"):
        answer["files"] = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())
                           if p.is_file() and p.stat().st_size <= COLLECTED_MAX_BYTES and p.name != CHECKPOINT}
    return answer


def store_collected(answer: dict[str, Any]) -> None:
    """Write the files a remote worker sent back into the task's run folder here, unless it is already there
    (a folder shared between head and workers)."""
    run_dir = Path(answer["task"]["run_dir"])
    files = answer.get("files") or {}
    if files and not (run_dir / "result.json").is_file():
        for name, data in files.items():
            atomic_write_bytes(run_dir / name, data)


def spread_over_gpus(tasks: list[dict[str, Any]], device: str, gpus: int) -> None:
    """Local workers: give task k GPU k mod `gpus` (each would otherwise resolve to cuda:0)."""
    if gpus > 1 and device in ("auto", "cuda"):
        for k, task in enumerate(tasks):
            task["device"] = f"cuda:{k % gpus}"


def _lug_point(done: dict[str, Any]) -> LugPoint:
    """The LUG point of a finished search (`run_task`'s answer)."""
    task, result = done["task"], done["result"]
    if result["genotype"] != result["raw_genotype"]:
        raise LugError(f"{task['run_dir']} was repaired; LUG points need the unrepaired derived network")
    # repair is off, so the deployed count in result.json is the exact size of the raw derived network
    search_size = done["metrics"].get(f"search_{task['metric']}")
    metric = task["metric"]  # params and FLOPs are always in result.json; memory with its (loose) device budget
    derived = result[metric] if metric in result else result["budgets"][metric]["value"]
    return LugPoint(float(task["search_budget"]), int(task["seed"]), float(derived),
                    result["raw_genotype"], done["val_acc"], None if search_size is None else float(search_size),
                    int(result["steps"]), float(result["search_seconds"]), str(task["run_dir"]))


_in_pool = False  # set in local pool workers only (Ray reuses its workers, so no flag may stick there)
_stopped = False


def _pool_worker_init() -> None:
    """Local pool worker: SIGINT between searches marks it stopped (within one, run_search checkpoints)."""
    global _in_pool
    _in_pool = True

    def stop(signum, frame):  # noqa: ARG001
        global _stopped
        _stopped = True

    signal.signal(signal.SIGINT, stop)


def run_tasks(tasks: list[dict[str, Any]], workers: int = 1, executor: str = "local",
              ray_address: str | None = None, gpus_per_task: float = 0.0) -> Iterator[dict[str, Any]]:
    """Run independent searches (see `run_task`), yielding each one's answer as it finishes."""
    if executor == "ray":
        yield from _run_ray(tasks, ray_address, gpus_per_task)
    elif workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield run_task(task)
    else:
        # 'spawn': a forked torch process can deadlock in its thread pools, and CUDA cannot fork
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn"),
                                 initializer=_pool_worker_init) as pool:
            futures = [pool.submit(run_task, task) for task in tasks]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                # an interrupt (or one failed search) stops the others at their next step, checkpointed,
                # so `--resume` loses nothing and nobody waits for whole searches to finish
                for process in list(getattr(pool, "_processes", {}).values()):
                    try:
                        os.kill(process.pid, signal.SIGINT)
                    except OSError:
                        pass
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def _run_ray(tasks: list[dict[str, Any]], address: str | None, gpus_per_task: float = 0.0
             ) -> Iterator[dict[str, Any]]:
    """Run the tasks as Ray tasks: a running Ray instance is used, else one is started (or joined at `address`).

    On a cluster every node needs dcanas installed and the dataset at the same --data-dir. Each task reserves
    `gpus_per_task` GPUs (Ray then sets its CUDA_VISIBLE_DEVICES, so "cuda" is the GPU it was given); a
    point's run folder is written on the node that ran it, and its small files come back and are written
    into the same folder here (so the head holds every point's record, shared storage or not).
    """
    try:
        import ray
    except ImportError:
        raise LugError("--executor ray needs Ray: pip install 'ray>=2.9' (or use the default local executor)") \
            from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        remotes: dict[int, Any] = {}
        pending = {}
        for task in tasks:
            # reserve as many Ray CPUs as the task uses threads, so Ray never oversubscribes a node
            threads = task["threads"]
            remotes.setdefault(threads, ray.remote(num_cpus=threads, num_gpus=gpus_per_task, max_retries=0)(run_task))
            pending[remotes[threads].remote({**task, "collect": True})] = task
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                pending.pop(ref)
                try:
                    answer = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None  # a DcanasError stays one for the CLI
                store_collected(answer)
                yield answer
    finally:
        if started:
            ray.shutdown()


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def uniform_search_size(table: Any, metric: str) -> float:
    """The paper's k_s (eq. 3) with uniform alphas: where every search starts."""
    import torch

    from .constraint import Constraint

    alphas = [torch.zeros(c.shape) for c in table.alpha_costs(metric)]
    return float(Constraint(table, [Budget(metric, 1.0)], "paper").expected_costs(alphas, None)[0])


_previous_sigterm: Any = None


def _terminate_as_interrupt(restore: bool = False) -> None:
    """While a build runs, SIGTERM (a scheduler's kill) stops it like Ctrl-C: workers checkpoint, --resume works."""
    global _previous_sigterm

    def interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        if not restore:
            _previous_sigterm = signal.signal(signal.SIGTERM, interrupt)
        elif _previous_sigterm is not None:
            signal.signal(signal.SIGTERM, _previous_sigterm)
            _previous_sigterm = None
    except ValueError:  # not the main thread: leave signals alone
        pass


def default_search_budgets(low: float, top: float, points: int) -> list[float]:
    """`points` search budgets spread evenly from the smallest deployable size to `top`.

    `top` is the uniform-alpha k_s: k_s prices all 14 edges and derived networks keep 8, so a search
    budget above it rarely binds, and budgets up to it are needed to reach the upper derived sizes.
    """
    if points < 2:
        raise LugError("--points must be at least 2")
    return [float(round(v)) for v in np.linspace(low, top, points)]


def point_config(base: Any, metric: str, search_budget: float, seed: int, upper: float) -> Any:
    """One LUG search: the paper's k_s at K_d', device budget at the upper bound so nothing masks K_d, no repair,
    fill or rerank (the graph maps a search budget to what the search itself derives)."""
    budgets = {"max_params": None, "max_flops": None, "max_latency": None, "max_memory": None, f"max_{metric}": upper}
    return replace(base, constraint="paper", search_budgets={metric: float(search_budget)}, repair=False,
                   fill_budget=False, rerank="none", seed=int(seed), **budgets)


def build_lug(base: Any, metric: str = "params", search_budgets: Sequence[float] | None = None, points: int = 5,
              seeds: Sequence[int] = (0,), run_dir: str | Path | None = None, *, resume: bool = False,
              workers: int | None = None, threads: int | None = None, executor: str = "local",
              ray_address: str | None = None, gpus_per_search: float = 0.0, progress: bool = True,
              log: Callable[[str], None] = print) -> tuple[Lug, Path]:
    """Run the LUG's searches in parallel, fit, save lug.json, lug.png and report.md; resumable."""
    from tqdm.auto import tqdm

    from .search_config import SearchConfig

    from .search_loop import prepare_search

    if resume:
        run_dir = Path(run_dir) if run_dir is not None else None
        if run_dir is None or not (run_dir / BUILD_FILE).is_file():
            raise LugError(f"{run_dir} holds no {BUILD_FILE}; nothing to resume (start the build without --resume)")
        spec = json.loads((run_dir / BUILD_FILE).read_text())
        base, metric = SearchConfig.from_dict(spec["search_config"]), spec["metric"]
        search_budgets, seeds = spec["search_budgets"], spec["seeds"]
    if metric not in LUG_METRICS:
        raise LugError(f"--metric must be one of {', '.join(LUG_METRICS)}, not {metric!r}")
    if executor not in EXECUTORS:
        raise LugError(f"--executor must be one of {', '.join(EXECUTORS)}")
    if not gpus_per_search >= 0:
        raise LugError(f"--gpus-per-search must be 0 or more, got {gpus_per_search}")
    for flag, count in (("--workers", workers), ("--threads", threads)):
        if count is not None and count < 1:  # 0 would silently mean the default
            raise LugError(f"{flag} must be at least 1, got {count}")
    if base.eval_channels == "auto":
        raise LugError("--channels auto picks a width per budget; a look-up graph needs one fixed width")
    seeds = sorted({int(s) for s in seeds})
    if not seeds:
        raise LugError("--seeds needs at least one seed")
    base = replace(base, max_params=None, max_flops=None, max_latency=None, max_model_bytes=None,
                   max_memory=None, search_budgets={})
    if metric == "memory" and base.space != "darts":
        raise LugError(f"--metric memory is implemented for --space darts, not {base.space}")
    # refuses a bad dataset or network before any folder is made (a memory table is built only when asked for)
    _, setting, table, _ = prepare_search(replace(base, search_budgets={metric: 0.0}) if metric == "memory" else base)
    low, high = table.bounds(metric)
    if search_budgets is None:
        search_budgets = default_search_budgets(low, max(uniform_search_size(table, metric), low * 1.01), points)
    search_budgets = sorted({float(b) for b in search_budgets})
    if len(search_budgets) < 2:
        raise LugError("a look-up graph needs two or more different search budgets")
    floor = float(table.fixed[metric])
    if search_budgets[0] < floor:
        raise LugError(f"search budget {readable(search_budgets[0])} is below the {metric} of the network's fixed "
                       f"parts ({readable(floor)}: stem, preprocessing, classifier); no search can reach it")
    if not resume:
        run_dir = prepare_run_dir(run_dir, False, f"lug-{base.dataset}-{metric}")
        write_json(run_dir / BUILD_FILE, {"search_config": base.to_dict(), "metric": metric,
                                          "search_budgets": search_budgets, "seeds": seeds})
    run_dir = Path(run_dir)

    workers = max(1, workers or available_cores())
    if threads is None:  # local: share this machine's cores; Ray: one core per search, Ray packs the nodes
        threads = max(1, available_cores() // workers) if executor == "local" else 1
    tasks = [{"config": point_config(base, metric, k, s, high).to_dict(), "metric": metric, "search_budget": k,
              "seed": s, "threads": threads, "run_dir": str((run_dir / "points" / f"{metric}-{k:.0f}-s{s}").resolve())}
             for k in search_budgets for s in seeds]
    if executor == "local":
        spread_over_gpus(tasks, base.device, _cuda_devices())
    done = sum((Path(t["run_dir"]) / "result.json").is_file() for t in tasks)
    log(f"look-up graph: {len(tasks)} searches ({len(search_budgets)} search budgets x {len(seeds)} seeds"
        + (f", {done} already done" if done else "") + f") on {executor}"
        + (f" with {min(workers, len(tasks))} workers x {threads} threads" if executor == "local" else ""))
    found: list[LugPoint] = []
    bar = tqdm(total=len(tasks), desc="lug points", disable=not progress, dynamic_ncols=True)
    try:
        _terminate_as_interrupt()
        for done in run_tasks(tasks, workers, executor, ray_address, gpus_per_search):
            point = _lug_point(done)
            found.append(point)
            found.sort(key=lambda p: (p.search_budget, p.seed))
            write_json(run_dir / "points.json", [p.to_dict() for p in found])  # partial progress survives a crash
            bar.update(1)
            bar.set_postfix_str(f"K_d' {point.search_budget:,.0f} -> K_d {point.derived:,.0f}")
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"finished searches are kept; resume with `dcanas lug build --resume {run_dir}`") \
            from None
    finally:
        bar.close()
        _terminate_as_interrupt(restore=True)
    point_fields = ("constraint", "repair", "seed", "search_budgets", "max_params", "max_flops", "max_latency",
                    "max_memory")
    search_config = {k: v for k, v in base.to_dict().items() if k not in point_fields}
    lug = Lug(base.dataset, metric, setting.to_dict(), search_config, found, (low, high), "paper",
              time.strftime("%Y-%m-%dT%H:%M:%S"))
    lug.save(run_dir / LUG_FILE)
    plot_lug(lug, run_dir / LUG_PLOT)
    _write_report(lug, run_dir)
    unconverged = lug.unconverged()
    if unconverged:
        log(f"note: {len(unconverged)} of {len(lug.points)} searches ended with k_s still above their search budget "
            f"(the paper runs each point until convergence); more --epochs make the graph steadier")
    return lug, run_dir


# -- what people read --------------------------------------------------------------------------------------------

def plot_lug(lug: Lug, path: str | Path) -> None:
    """Docs-ready PNG: the searches' (K_d', K_d) points, the monotone fit, the identity line, the deployable range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    xs = np.array([p.search_budget for p in lug.points])
    ys = np.array([p.derived for p in lug.points])
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    grid = np.linspace(lug.knots_x[0], lug.knots_x[-1], 200)
    lo = min(xs.min(), ys.min(), lug.bounds[0])
    hi = max(xs.max(), ys.max())
    ax.axhspan(lug.bounds[0], lug.bounds[1], color="0.93", zorder=0, label="deployable range")
    ax.plot([lo, hi], [lo, hi], ":", color="0.4", lw=1, label="identity  K_d = K_d'")
    ax.plot(grid, lug.fitted(grid), "-", color="C1", lw=2, label="monotone fit (look-up graph)")
    ax.scatter(xs, ys, s=28, color="C0", zorder=3, label="searches (unrepaired derived network)")
    ax.set_xlim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    ax.set_ylim(lo - 0.03 * (hi - lo), max(hi, lug.bounds[1]) * 1.02)
    fmt = FuncFormatter(lambda v, _: human(v))
    ax.xaxis.set_major_formatter(fmt)
    ax.yaxis.set_major_formatter(fmt)
    ax.set_xlabel(f"search budget K_d' ({lug.unit}, the paper's k_s)")
    ax.set_ylabel(f"derived network K_d ({lug.unit})")
    s = lug.setting
    ax.set_title(f"look-up graph: {lug.dataset}, {lug.metric}, {s.get('cells')} cells x {s.get('channels')} ch, "
                 f"{lug.search_config.get('epochs')} epochs", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _write_report(lug: Lug, run_dir: Path) -> None:
    lines = [f"# Look-up graph: {lug.dataset}, {lug.metric}", "",
             f"Deployed network: {lug.setting}.", "",
             f"Each point is a search with the paper's constraint (eq. 3) at search budget K_d'; K_d is the exact "
             f"{lug.metric} of its unrepaired derived network ({lug.unit}).", "",
             "| K_d' (search) | seed | k_s at end | K_d (derived) | K_d / K_d' | fitted K_d | val acc | steps | run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in lug.points:
        acc = f"{p.val_acc:.3f}" if p.val_acc is not None else ""
        ks = f"{p.search_size:,.0f}" if p.search_size is not None else ""
        lines.append(f"| {p.search_budget:,.0f} | {p.seed} | {ks} | {p.derived:,.0f} | "
                     f"{p.derived / p.search_budget:.3f} | {lug.fitted(p.search_budget):,.0f} | {acc} | {p.steps} "
                     f"| {Path(p.run_dir).name} |")
    lines += ["", f"Use it: `dcanas search --dataset {lug.dataset} --lug {run_dir / LUG_FILE} "
              f"--max-{lug.metric} K` for K in {lug.knots_y[0]:,.0f} .. {lug.bounds[1]:,.0f} "
              f"(a budget above {lug.knots_y[-1]:,.0f} is searched at the largest search budget, "
              f"{lug.knots_x[-1]:,.0f}).", "",
              f"![look-up graph]({LUG_PLOT})", ""]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))
