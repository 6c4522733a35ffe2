"""Latency on this device with onnxruntime: sessions, a careful timer, statistics, and the device's description.

Protocol: inputs and outputs are bound once (IO binding), so a timed run is onnxruntime's own work
plus one call's overhead, with no numpy copies; every model is warmed up; runs are split into rounds,
and when several models are measured together the rounds are interleaved, so a burst of load from
another process on a shared machine spreads over all of them instead of biasing one. The median is
the figure of merit; p10/p90 and the interquartile range show the spread.
"""
from __future__ import annotations

import gc
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError

DEFAULT_THREADS = 1  # one intra-op thread: reproducible on a shared machine, and what many edge devices have
DEFAULT_WARMUP = 10
DEFAULT_RUNS = 100
DEFAULT_ROUNDS = 5
DEFAULT_PROVIDER = "CPUExecutionProvider"  # `dcanas profile --provider` picks another onnxruntime offers


def require_onnxruntime():
    """The onnxruntime module, or a ConfigError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("latency is measured with onnxruntime, which is not installed: "
                          "pip install 'dcanas[export]' (or pip install onnx onnxruntime)") from None
    return onnxruntime


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed runs, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    q1_ms: float
    q3_ms: float
    mean_ms: float
    min_ms: float
    runs: int

    @property
    def iqr_ms(self) -> float:
        """Interquartile range."""
        return self.q3_ms - self.q1_ms

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form (with the IQR)."""
        return {**asdict(self), "iqr_ms": self.iqr_ms}


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    """Median, p10/p90, quartiles, mean and min of timed runs."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples to summarise")
    p10, q1, median, q3, p90 = np.percentile(a, [10, 25, 50, 75, 90])
    return LatencyStats(float(median), float(p10), float(p90), float(q1), float(q3), float(a.mean()),
                        float(a.min()), int(a.size))


def processor_name() -> str:
    """The CPU's model name (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(threads: int, provider: str = "CPUExecutionProvider", dtype: str = "float32") -> dict[str, Any]:
    """What the latency was measured on: platform, processor, cores, onnxruntime version and threads."""
    ort = require_onnxruntime()
    return {"platform": platform.platform(), "processor": processor_name(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "onnxruntime": ort.__version__,
            "provider": provider, "threads": threads, "dtype": dtype,
            "threads_note": "intra-op threads; 0 = onnxruntime's default (one per physical core)"}


def check_provider(provider: str) -> str:
    """`provider` if this onnxruntime offers it; else one line listing the ones it does."""
    ort = require_onnxruntime()
    available = ort.get_available_providers()
    if provider not in available:
        raise ConfigError(f"--provider {provider} is not available in this onnxruntime {ort.__version__}; "
                          f"available: {', '.join(available)}")
    return provider


def make_session(model: bytes | str | Path, threads: int = DEFAULT_THREADS, *, disabled_optimizers: Sequence[str] = (),
                 provider: str = DEFAULT_PROVIDER):
    """An onnxruntime session on `provider` with `threads` intra-op threads, full graph optimisation, sequential
    execution."""
    ort = require_onnxruntime()
    check_provider(provider)
    if threads < 0:
        raise ConfigError(f"--threads must be 0 (onnxruntime's default) or more, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    source = str(model) if isinstance(model, Path) else model
    kwargs = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
    try:
        return ort.InferenceSession(source, options, providers=[provider], **kwargs)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        where = source if isinstance(source, str) else "the model"
        raise ConfigError(f"onnxruntime cannot load {where}: {str(exc).splitlines()[0][:300]}") from None


def input_shape(session, batch_size: int = 1, image_size: int | None = None) -> tuple[int, ...]:
    """The (single) input's shape with its symbolic dimensions resolved: batch -> batch_size, others -> image_size."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ConfigError(f"the model has {len(inputs)} inputs; dcanas profiles single-input image classifiers")
    shape = []
    for k, dim in enumerate(inputs[0].shape):
        if isinstance(dim, int) and dim > 0:
            if k == 0 and dim != batch_size and batch_size != 1:
                raise ConfigError(f"the model was exported for batch {dim}; export it with --dynamic-batch or "
                                  f"profile at --batch-size {dim}")
            shape.append(dim)
        elif k == 0:
            shape.append(batch_size)
        elif image_size is not None:
            shape.append(image_size)
        else:
            raise ConfigError(f"input dimension {k} of the model is symbolic ({dim!r}); give --image-size")
    return tuple(shape)


class Timer:
    """Times one session on a fixed input with inputs and outputs bound once (no copies per run)."""

    def __init__(self, session, inputs: dict[str, np.ndarray]):
        ort = require_onnxruntime()
        self.session = session
        self.binding = session.io_binding()
        self._keep = []  # the bound buffers must outlive the binding
        for name, array in inputs.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
            self._keep.append(value)
            self.binding.bind_ortvalue_input(name, value)
        outputs = session.run(None, inputs)  # learn the output shapes once
        for meta, out in zip(session.get_outputs(), outputs):
            value = ort.OrtValue.ortvalue_from_numpy(np.empty_like(out))
            self._keep.append(value)
            self.binding.bind_ortvalue_output(meta.name, value)

    def run(self, n: int) -> list[float]:
        """Time `n` runs; milliseconds each."""
        samples = []
        run = self.session.run_with_iobinding
        for _ in range(n):
            t0 = time.perf_counter_ns()
            run(self.binding)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        return samples


def measure_timers(timers: Sequence[Timer], *, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS,
                   rounds: int = DEFAULT_ROUNDS, progress: bool = False, desc: str = "profiling") -> list[LatencyStats]:
    """Warm up each timer, then time `runs` runs of each, in `rounds` interleaved rounds."""
    if runs < 1 or rounds < 1 or warmup < 0:
        raise ConfigError(f"need --runs >= 1, --rounds >= 1 and --warmup >= 0 (got {runs}, {rounds}, {warmup})")
    from tqdm.auto import tqdm

    rounds = min(rounds, runs)
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    samples: list[list[float]] = [[] for _ in timers]
    bar = tqdm(total=len(timers) * (rounds + 1), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of a timed run is noise, not latency
    try:
        for timer in timers:
            timer.run(warmup)
            bar.update(1)
        for n in per_round:
            for k, timer in enumerate(timers):
                timer.run(1)  # re-warm caches after the other models ran
                samples[k] += timer.run(n)
                bar.update(1)
    finally:
        if gc_was_enabled:
            gc.enable()
        bar.close()
    return [summarize(s) for s in samples]


def measure_modules(modules: Sequence[tuple[Any, Any]], *, threads: int = DEFAULT_THREADS,
                    warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS, rounds: int = DEFAULT_ROUNDS,
                    exporter: str = "auto", progress: bool = False, desc: str = "profiling",
                    provider: str = DEFAULT_PROVIDER, int8: bool = False) -> list[LatencyStats]:
    """Export each (torch module or ONNX bytes, example input) pair to ONNX and time them all together,
    interleaved; with `int8`, each is first quantised as `dcanas export --int8` does (calibrated on random
    inputs of the example's shape: the ranges move the numbers, not the work)."""
    from tqdm.auto import tqdm

    from .export import onnx_bytes

    timers = []
    for module, example in tqdm(modules, desc=f"{desc}: export", disable=not progress, leave=False,
                                dynamic_ncols=True):
        model = module if isinstance(module, bytes) else onnx_bytes(module, example, exporter=exporter)[0]
        if int8:
            from .quantize import quantize_int8

            generator = np.random.default_rng(0)
            calibration = generator.standard_normal((8, *example.shape[1:]), dtype=np.float32)
            model = quantize_int8(model, np.repeat(calibration, example.shape[0], axis=0))
        session = make_session(model, threads, provider=provider)
        timers.append(Timer(session, {session.get_inputs()[0].name: example.numpy()}))
    return measure_timers(timers, warmup=warmup, runs=runs, rounds=rounds, progress=progress, desc=f"{desc}: time")


def profile_model(model: bytes | str | Path, *, batch_size: int = 1, image_size: int | None = None,
                  threads: int = DEFAULT_THREADS, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS,
                  rounds: int = DEFAULT_ROUNDS, progress: bool = False, provider: str = DEFAULT_PROVIDER
                  ) -> dict[str, Any]:
    """Latency of an ONNX model (file or bytes) on this device; returns stats, input shape and device."""
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise ConfigError(f"no ONNX file at {model}")
    session = make_session(model, threads, provider=provider)
    shape = input_shape(session, batch_size, image_size)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    stats = measure_timers([Timer(session, {session.get_inputs()[0].name: x})], warmup=warmup, runs=runs,
                           rounds=rounds, progress=progress, desc="latency")[0]
    return {"latency": stats.to_dict(), "units": "ms", "input_shape": list(shape), "batch_size": shape[0],
            "warmup": warmup, "runs": runs, "rounds": rounds, "device": device_info(threads, provider)}
