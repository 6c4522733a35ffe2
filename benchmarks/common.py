"""Helpers every benchmark script shares: where results go, how they are summarised, what ran them.

Standard library only at module level: `nni_side_by_side.py` imports the search-step worker in NNI's
own virtual environment.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# A results page keeps everything below this line when its script rewrites it
NOTES = "<!-- notes: everything below is kept when the script rewrites this file -->"


# The search-step configurations (search_step.py, search_ablation.py, nni_side_by_side.py):
# cumulative, as in the paper's Figure 4a: each row adds one saving to the row above
CONFIGS = {
    "plain DARTS (all savings off)": dict(bottleneck=1, weight_sharing=False, derived_cells=False),
    "+ weight sharing": dict(bottleneck=1, weight_sharing=True, derived_cells=False),
    "+ channel bottleneck (k=4)": dict(bottleneck=4, weight_sharing=True, derived_cells=False),
    "+ derived cells (all on)": dict(bottleneck=4, weight_sharing=True, derived_cells=True),
    "all on + params constraint": dict(bottleneck=4, weight_sharing=True, derived_cells=True, constraint=True),
    "child network train step (floor)": dict(child=True),
}


def load_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a results.jsonl (one finished run per line); [] when there is none yet."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Add one finished run to results.jsonl (an interrupted study continues where it stopped)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def mean_sd(values: list[float], *, scale: float = 1.0, digits: int = 2, count: bool = False) -> str:
    """'mean ± sd' of `values` times `scale` (100 for fractions shown as percent), '(n)' with `count`."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    text = f"{scale * statistics.mean(values):.{digits}f} ± {scale * sd:.{digits}f}"
    return f"{text} ({len(values)})" if count else text


def study_command(script: str, argv: list[str]) -> str:
    """The command line that produced a study's results: ARGV without the report-only options."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--note":
            skip = True  # its value follows
        elif token != "--report-only" and not token.startswith("--note="):
            kept.append(token)
    return shlex.join(["python", script, *kept])


def machine() -> str:
    """CPU model, cores, Python/torch versions, load at start."""
    import torch

    from dcanas.threads import available_cores

    model = platform.processor() or platform.machine() or "cpu"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {available_cores()} cores (shared; 1-min load {load:.1f} at start), "
            f"Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.backends.cpu.get_cpu_capability()} kernels), {platform.system()}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the end-to-end studies (end_to_end.py, search_ablation.py): one runner, one training recipe ---------

def cifar10_batches(data_dir: str, folder: Path) -> Path:
    """Write an imagefolder copy of CIFAR-10 as the official python batches (once), for fast loading."""
    import pickle

    import numpy as np

    from dcanas.data import load_dataset

    target = folder / "cifar-10-batches-py"
    if (target / "batches.meta").exists():
        return folder
    data = load_dataset("imagefolder", data_dir)
    if data.train_x.shape[1:] != (3, 32, 32) or len(data.classes) != 10:
        raise SystemExit(f"--as-cifar10 needs 32x32 colour images of 10 classes, got {tuple(data.train_x.shape[1:])}")
    target.mkdir(parents=True, exist_ok=True)

    def dump(name: str, x, y) -> None:
        rows = {"data": x.reshape(len(x), -1).numpy(), "labels": y.tolist()}
        (target / name).write_bytes(pickle.dumps(rows))

    chunks = np.array_split(np.arange(len(data.train_y)), 5)
    for i, rows in enumerate(chunks, 1):
        dump(f"data_batch_{i}", data.train_x[rows], data.train_y[rows])
    dump("test_batch", data.test_x, data.test_y)
    (target / "batches.meta").write_bytes(pickle.dumps({"label_names": data.classes}))
    return folder


def run_dcanas(argv: list[str], log_path: Path) -> dict[str, Any]:
    """Run `dcanas ARGV --json` with one thread; its JSON, wall seconds and peak RSS (MiB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path.with_suffix(".json"), "w") as out, open(log_path, "w") as err:
        # no --quiet: the progress bars go to the log, to watch a long study
        proc = subprocess.Popen([sys.executable, "-m", "dcanas", *argv, "--json"],
                                stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own peak RSS
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"dcanas {shlex.join(argv)} failed; see {log_path}")
    result = json.loads(log_path.with_suffix(".json").read_text())
    return {**result, "wall_seconds": round(seconds, 1), "peak_mib": round(usage.ru_maxrss / 1024)}


def train_argv(args: argparse.Namespace, seed: int) -> list[str]:
    """The training recipe shared by both methods."""
    argv = ["--epochs", str(args.train_epochs), "--batch-size", str(args.train_batch), "--lr", str(args.lr),
            "--cutout", str(args.cutout), "--drop-path", str(args.drop_path), "--seed", str(seed),
            "--device", args.device]
    argv += ["--eval-every", str(args.eval_every)] if args.eval_every else []
    return argv + (["--train-subset", str(args.train_subset)] if args.train_subset else [])


def data_argv(args: argparse.Namespace) -> list[str]:
    """--dataset and --data-dir (and --image-size where the study resizes its images)."""
    size = getattr(args, "image_size", None)
    return (["--dataset", args.dataset] + (["--data-dir", args.data_dir] if args.data_dir else [])
            + (["--image-size", str(size)] if size else []))


# -- NAS-Bench-201's truth (search_quality.py, rerank_rules.py) --------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def bench_truth(table_path: str):
    """The table, each row's exact parameter count, and the none-free mask."""
    from dcanas.spaces.nb201.bench import load_nb201_table
    from dcanas.spaces.nb201.cost import build_nb201_cost_table
    from dcanas.spaces.nb201.ops import NONE_INDEX

    bench = load_nb201_table(table_path)
    ops = bench.op_indices()
    params = build_nb201_cost_table().all_arch_costs("params", ops)  # exact: parameters are additive
    return bench, params, (ops != NONE_INDEX).all(axis=1)


# The NB201 table's two edge devices our budgets name, as the figures and tables spell them
DEVICE_NAMES = {"pixel3": "Pixel 3", "raspi4": "Raspberry Pi 4"}


def budget_label(budget: dict[str, Any] | None) -> str:
    """A budget as the results tables name it: "none", "params ≤ 400K", "Pixel 3 ≤ 10.4 ms"."""
    if budget is None:
        return "none"
    if budget["metric"] == "params":
        return f"params ≤ {budget['limit'] / 1e3:g}K"
    return f"{DEVICE_NAMES[budget['device']]} ≤ {budget['limit']:g} ms"


def cost_of(budget: dict[str, Any] | None, table_path: str) -> np.ndarray:
    """Every row's cost under `budget`'s metric (Pixel 3 latency when unconstrained, for the plot)."""
    bench, params, _ = bench_truth(table_path)
    if budget is None:
        return bench.latency["pixel3"]
    return params if budget["metric"] == "params" else bench.latency[budget["device"]]


def within_budget(budget: dict[str, Any] | None, table_path: str, floor: float = 0.0) -> np.ndarray:
    """The mask of none-free architectures using `floor`..100 % of `budget` (all none-free ones: no budget)."""
    _, _, none_free = bench_truth(table_path)
    ok = none_free.copy()
    if budget is not None:
        cost = cost_of(budget, table_path)
        ok &= (cost <= budget["limit"]) & (cost >= floor * budget["limit"])
    return ok


def best_in_budget(budget: dict[str, Any] | None, table_path: str) -> float:
    """The best CIFAR-10 test accuracy among none-free architectures within `budget`."""
    return float(bench_truth(table_path)[0].accuracy["cifar10"][within_budget(budget, table_path)].max())


def final_weights(run_dir: Path) -> dict[str, list]:
    """A search's final mixing weights: result.json records them; older runs hold the same in history.json."""
    result = json.loads((run_dir / "result.json").read_text())
    return result.get("mixing_weights") or json.loads((run_dir / "history.json").read_text())[-1]["alphas"]
