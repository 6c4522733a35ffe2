"""`dcanas search` under torchrun (gloo, CPU): 2 processes == 1 process with the same global batch and micro-batch,
rank 0 alone writes, a signal to one process stops all of them at one step, a refused run folder stops every process."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcanas.spaces.darts.supernet import Supernet, SupernetConfig

# 4 supernet cells (2 mixed, 2 derived, so most weights get no gradient in a step), 2 global batches of 256 per
# epoch (step 3 crosses an epoch boundary), and a budget tight enough that the multiplier moves.
SEARCH = ["search", "--dataset", "digits", "--epochs", "2", "--max-steps", "4", "--batch-size", "256", "--max-params",
          "120K", "--search-cells", "4", "--search-channels", "8", "--seed", "1", "--device", "cpu", "--quiet"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dcanas"]
ONE_PROCESS = [sys.executable, "-m", "dcanas"]
# One thread per process: deterministic, and far faster than two spinning threads on a busy 2-core machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(argv, cwd=None):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=ENV, cwd=cwd, check=False)


def _final(run_dir):
    """The checkpoint's parameters (not BatchNorm running statistics: per process, never used by the search),
    multipliers and step count, and the derived genotype."""
    ckpt = torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)
    params = {k: v for k, v in ckpt["model"].items() if "running_" not in k and "num_batches" not in k}
    return params, ckpt["constraint"]["lambdas"], ckpt["total_steps"], (Path(run_dir) / "genotype.txt").read_text()


def _metrics(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def two_process(tmp_path_factory):
    """A 2-process search with the default run folder, started in an empty directory."""
    cwd = tmp_path_factory.mktemp("ddp")
    out = _run([*TORCHRUN, *SEARCH], cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd, out


def test_only_rank_0_writes(two_process):
    cwd, out = two_process
    runs = list((cwd / "runs").iterdir())
    assert len(runs) == 1, runs  # a second process creating its own folder would leave runs/...-2
    assert sorted(p.name for p in cwd.iterdir()) == ["runs"]
    names = {p.name for p in runs[0].iterdir()}
    assert {"config.json", "metrics.csv", "history.json", "checkpoint.pt", "genotype.txt", "report.md",
            "result.json", "search.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert out.stdout.count("genotype  Genotype(") == 1  # one summary per job
    assert len(json.loads((runs[0] / "history.json").read_text())) == 2


def test_two_processes_match_one_process(two_process, tmp_path):
    # 2 processes x 1 micro-batch of 128 == 1 process x 2 micro-batches of 128: the same rows, the same BatchNorm
    # groups; the gradients of the two halves are averaged the same way, so the runs agree to the bit in practice.
    single = _run([*ONE_PROCESS, *SEARCH, "--accum-steps", "2", "--run-dir", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr[-3000:]
    ddp_dir = next((two_process[0] / "runs").iterdir())
    params, lambdas, steps, genotype = _final(ddp_dir)
    ref_params, ref_lambdas, ref_steps, ref_genotype = _final(tmp_path / "single")
    assert steps == ref_steps == 4 and genotype == ref_genotype
    assert params.keys() == ref_params.keys()
    drift = max((params[k] - ref_params[k]).abs().max().item() for k in params)
    assert drift < 1e-5, drift
    assert torch.allclose(lambdas, ref_lambdas, rtol=0, atol=1e-9) and lambdas.item() > 0  # the constraint acted
    torch.manual_seed(1)
    init = Supernet(SupernetConfig(cells=4, channels=8, in_channels=1, num_classes=10)).state_dict()
    for name in ("alpha_normal", "alpha_reduce", "stem.0.weight", "classifier.weight"):  # not a vacuous comparison
        assert (params[name] - init[name]).abs().max() > 1000 * max(drift, 1e-9), name
    assert json.loads((ddp_dir / "result.json").read_text())["genotype"] == \
        json.loads((tmp_path / "single" / "result.json").read_text())["genotype"]
    _assert_same_metrics(ddp_dir, tmp_path / "single")  # the epoch sums over both processes == one process's


def _assert_same_metrics(run_dir, reference):
    rows, ref_rows = _metrics(run_dir), _metrics(reference)
    assert len(rows) == len(ref_rows) == 2
    for row, ref in zip(rows, ref_rows):
        assert row == pytest.approx(ref, rel=1e-9)


def _worker_pid(launcher_pid, rank, timeout=120):
    """The pid of torchrun's worker process with RANK=`rank`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                environ = (entry / "environ").read_bytes().split(b"\0") if ppid == launcher_pid else []
            except (OSError, IndexError, ValueError):
                continue
            if f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.1)
    raise TimeoutError("no worker process found")


def test_signal_to_one_process_stops_all_and_resumes_exactly(two_process, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*TORCHRUN, *SEARCH, "--run-dir", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        rank_1 = _worker_pid(proc.pid, 1)
        history, deadline = run_dir / "history.json", time.time() + 240
        while not (history.is_file() and json.loads(history.read_text() or "[]")):  # epoch 1 done
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no epoch finished"
            time.sleep(0.05)
        os.kill(rank_1, signal.SIGTERM)  # only rank 1: rank 0 must learn of it and checkpoint
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0 and not (run_dir / "genotype.txt").exists(), "the run finished before the signal"
    assert "stopped by signal on another process; resume with --resume" in stderr  # rank 0's message
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 1 and ckpt["world_size"] == 2  # mid-epoch, after step 3
    resumed = _run([*TORCHRUN, "search", "--quiet", "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    params, lambdas, steps, genotype = _final(run_dir)
    ref_params, ref_lambdas, _, ref_genotype = _final(next((two_process[0] / "runs").iterdir()))
    assert steps == 4 and genotype == ref_genotype and torch.equal(lambdas, ref_lambdas)
    assert all(torch.equal(params[k], ref_params[k]) for k in ref_params)
    _assert_same_metrics(run_dir, next((two_process[0] / "runs").iterdir()))  # one row per epoch, sums kept


def test_refused_run_folder_stops_every_process(two_process):
    run_dir = next((two_process[0] / "runs").iterdir())
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    out = _run([*TORCHRUN, *SEARCH, "--run-dir", str(run_dir)])  # rank 0 refuses; rank 1 must not wait forever
    assert out.returncode != 0
    assert out.stderr.count("already holds files") == 2  # rank 1 got rank 0's error instead of waiting for it
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
