"""The thread policy: precedence of the explicit counts, the automatic choice, and the count recorded per run."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from dcanas import threads
from dcanas.errors import ConfigError
from dcanas.search_config import SearchConfig
from dcanas.search_loop import run_search


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("DCANAS_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return monkeypatch


def test_precedence_argument_then_dcanas_then_omp(clean_env):
    assert threads.requested_threads() is None
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert threads.requested_threads() == 3
    clean_env.setenv("DCANAS_THREADS", "2")
    assert threads.requested_threads() == 2
    assert threads.requested_threads(5) == 5
    clean_env.setenv("DCANAS_THREADS", "auto")
    assert threads.requested_threads() is None
    clean_env.setenv("DCANAS_THREADS", "free")
    assert threads.requested_threads() == threads.FREE


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_counts_are_refused(clean_env, value):
    clean_env.setenv("DCANAS_THREADS", value)
    with pytest.raises(ConfigError, match="DCANAS_THREADS must be a positive integer"):
        threads.requested_threads()


def test_automatic_choice(clean_env, monkeypatch):
    assert threads.choose_threads(64) == 1  # 8x8 digits: one thread
    assert threads.choose_threads(3 * 32 * 32, device="meta") == 1  # not on the CPU: the CPU only launches kernels
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores_elsewhere", lambda: 0.1)
    assert threads.choose_threads(3 * 32 * 32) == 4  # large inputs on an idle machine: every core
    monkeypatch.setattr(threads, "busy_cores_elsewhere", lambda: 2.8)
    assert threads.choose_threads(3 * 32 * 32) == 1  # three cores taken by other processes
    monkeypatch.setattr(threads, "busy_cores_elsewhere", lambda: 1.6)
    assert threads.choose_threads(3 * 32 * 32) == 2
    assert threads.choose_threads(3 * 32 * 32, threads=3) == 3  # explicit wins
    clean_env.setenv("DCANAS_THREADS", "free")
    monkeypatch.setattr(threads, "busy_cores_elsewhere", lambda: 0.0)
    assert threads.choose_threads(64) == 4  # free: the idle cores even for small inputs


def test_busy_cores_elsewhere_sees_a_busy_process():
    if sys.platform != "linux":
        pytest.skip("reads /proc/stat")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert threads.busy_cores_elsewhere(0.5) > 0.5
    finally:
        busy.kill()
        busy.wait()


def test_search_records_its_thread_count_and_restores_the_callers(clean_env, tmp_path):
    torch.set_num_threads(1)
    config = SearchConfig(dataset="digits", epochs=1, max_steps=2, max_params=150_000, threads=2)
    run_search(config, tmp_path / "run", progress=False, log=lambda m: None)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == 2
    assert torch.get_num_threads() == 1
    auto = SearchConfig(dataset="digits", epochs=1, max_steps=2, max_params=150_000)
    run_search(auto, tmp_path / "auto", progress=False, log=lambda m: None)
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["threads"] == 1  # small images


def test_cli_refuses_a_bad_thread_count_before_writing(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "dcanas", "search", "--max-steps", "1", "--quiet",
                           "--run-dir", str(run_dir), "--threads", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--threads must be a positive integer" in done.stderr
    assert "Traceback" not in done.stderr and not run_dir.exists()
