"""How many CPU threads torch uses in a search or training run: chosen by measurement, fixed for the run.

Why. torch's OpenMP threads spin at every parallel region until all of them arrive. When another process
takes a core, one of our threads is descheduled and the others spin waiting for it: on this project's
2-core machine the default search took 3.0x its time alone beside two busy processes with 2 threads, 1.8x
with one, and 6.6x vs 1.07x beside a second search (`benchmarks/contention.py`, BENCHMARKS.md §11). On
small inputs (8x8 digits, 28x28 greyscale) a second thread saves only 8-16 % on an idle machine, so they
get one; CIFAR-size inputs take the cores that other processes leave idle when the run starts.

The count is fixed for the whole run and recorded in its config: the thread count changes floating-point
reduction order, hence the derived network, so a resumed run must use the same count to stay exact.
Order of precedence: `--threads N`, then `DCANAS_THREADS=N`, then `OMP_NUM_THREADS` set by the user,
then the automatic choice. `DCANAS_THREADS=free` takes the cores idle at start whatever the input size
(faster alone on small inputs, slower once other work arrives: BENCHMARKS.md §11).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .errors import ConfigError

# Below this many input values per image (C*H*W) one thread: 8-16 % slower than two on an idle machine
# (digits 8x8), 1.7-6x faster once other work shares the cores (BENCHMARKS.md §11).
SMALL_INPUT = 1024
_SAMPLE_SECONDS = 0.25  # how long the machine's load is sampled before choosing


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


FREE = -1  # requested_threads' answer for DCANAS_THREADS=free


def requested_threads(threads: int | None = None) -> int | None:
    """An explicit thread count from the argument, DCANAS_THREADS or OMP_NUM_THREADS; None = automatic,
    FREE = the cores idle at start whatever the input size."""
    if threads is not None:
        source, value = "--threads", str(threads)
    elif os.environ.get("DCANAS_THREADS"):
        source, value = "DCANAS_THREADS", os.environ["DCANAS_THREADS"]
    elif os.environ.get("OMP_NUM_THREADS"):
        source, value = "OMP_NUM_THREADS", os.environ["OMP_NUM_THREADS"]
    else:
        return None
    if value.strip().lower() == "auto" and source == "DCANAS_THREADS":
        return None
    if value.strip().lower() == "free" and source == "DCANAS_THREADS":
        return FREE
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"{source} must be a positive integer (or DCANAS_THREADS=auto|free), got {value!r}") from None
    if count < 1:
        raise ConfigError(f"{source} must be a positive integer (or DCANAS_THREADS=auto|free), got {value!r}")
    return count


def busy_cores_elsewhere(seconds: float = _SAMPLE_SECONDS) -> float | None:
    """Cores kept busy by other processes over a short window: system CPU time minus this process's own."""

    def sample() -> tuple[float, float, float]:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # all but idle and iowait
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), sum(os.times()[:2])

    try:
        t0, busy0, own0 = sample()
        time.sleep(seconds)
        t1, busy1, own1 = sample()
    except (OSError, ValueError, IndexError):  # no /proc (not Linux)
        return None
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-6))


def choose_threads(sample_numel: int, device: torch.device | str = "cpu", threads: int | None = None) -> int:
    """The intra-op thread count for a run on inputs of `sample_numel` values per image (see the module doc)."""
    explicit = requested_threads(threads)
    if explicit is not None and explicit != FREE:
        return explicit
    cores = available_cores()
    small = sample_numel < SMALL_INPUT and explicit != FREE
    if torch.device(device).type != "cpu" or small or cores == 1:
        return 1  # small inputs gain nothing from threads; on a GPU the CPU thread only launches kernels
    others = busy_cores_elsewhere()
    if others is None:
        return cores
    # a core counts as taken once another process uses ~70 % of it
    return max(1, min(cores, int(cores - others + 0.3)))


def use_threads(count: int) -> None:
    """Set torch's intra-op thread count (a no-op when already set)."""
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
