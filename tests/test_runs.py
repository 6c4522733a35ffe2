"""Run folders: files honour the umask, loading never runs code, every folder records its provenance,
and a run stopped before its first checkpoint can be started afresh."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dcanas.cli import main
from dcanas.errors import RunDirError
from dcanas.model_io import save_model
from dcanas.runs import (CHECKPOINT, RUN_INFO, atomic_write_text, current_umask, load_checkpoint, prepare_run_dir,
                         record_run_info, save_checkpoint)
from dcanas.spaces.darts.genotype import GENOTYPES
from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "a.json", "{}")
    save_checkpoint(tmp_path / CHECKPOINT, {"x": torch.ones(2)})
    for name in ("a.json", CHECKPOINT):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


class _Payload:
    """Pickles to a call that creates a marker file: what a hostile model.pt would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_payload_is_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    model = tmp_path / "model.pt"
    torch.save({"format": "dcanas-model/1", "state_dict": {}, "extra": _Payload(marker)}, model)
    with pytest.raises(RunDirError, match="will not run code"):
        load_checkpoint(model)
    before = model.read_bytes()
    assert main(["export", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dcanas: error:") and "\n" not in err and "will not run code" in err
    assert not marker.exists() and model.read_bytes() == before and not (tmp_path / "model.onnx").exists()


def test_our_own_model_file_loads_with_weights_only(tmp_path):
    from dcanas.model_io import load_model

    net = EvalNetwork(GENOTYPES.get("DARTS_V2"), eval_setting_for("digits", cells=5, channels=8))
    save_model(tmp_path / "model.pt", net, {"metrics": {"test_acc": 0.5}, "budgets": {"params": {"limit": 1e6}}})
    loaded, extra = load_model(tmp_path)
    assert extra["metrics"]["test_acc"] == 0.5
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))


def test_run_folder_records_versions_command_and_host(tmp_path):
    path = prepare_run_dir(tmp_path / "run", False, "x")
    info = json.loads((path / RUN_INFO).read_text())
    assert info["torch"] == torch.__version__ and info["dcanas"] and info["host"] and info["python"]
    assert isinstance(info["command"], list) and info["time"]
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # this test runs from the git checkout, so the commit is known
    assert info["git_commit"] is None or len(info["git_commit"].split("+")[0]) == 40
    save_checkpoint(path / CHECKPOINT, {})
    prepare_run_dir(path, True, "x")  # checks only: the loop records the resume once it accepts the checkpoint
    assert json.loads((path / RUN_INFO).read_text()) == info
    record_run_info(path, resumed=True)
    again = json.loads((path / RUN_INFO).read_text())
    assert again["time"] == info["time"] and len(again["resumed"]) == 1


def test_a_run_stopped_before_its_first_checkpoint_can_start_afresh(tmp_path):
    path = tmp_path / "run"
    prepare_run_dir(path, False, "x")
    (path / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="without --resume to start it afresh"):
        prepare_run_dir(path, True, "x")
    assert prepare_run_dir(path, False, "x") == path and not (path / "config.json").exists()
    (path / "metrics.csv").write_text("epoch\n0\n")  # a run that got going is never cleared
    with pytest.raises(RunDirError, match="already holds files"):
        prepare_run_dir(path, False, "x")
    assert (path / "metrics.csv").is_file()


def test_run_dir_under_a_file_or_read_only_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker, blocker / "run"):
        done = subprocess.run([sys.executable, "-m", "dcanas", "search", "--max-steps", "1", "--quiet",
                               "--run-dir", str(target)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "--run-dir" in done.stderr
    assert blocker.read_text() == "x"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(RunDirError, match="choose another --run-dir"):
            prepare_run_dir(locked / "run", False, "x")


def test_a_run_resumed_at_max_steps_ends_its_epoch_without_another_step(tmp_path):
    """A checkpoint taken mid-epoch at --max-steps (a signal on the last step, or a lowered --max-steps on resume):
    the epoch still ends (so it gets its evaluation and metrics row) but takes no step; on an epoch's boundary
    nothing is left to run. A fresh run stops exactly at --max-steps."""
    import torch

    from dcanas.run_loop import Run
    from dcanas.runs import rng_state

    def make(checkpoint, max_steps):
        return Run(tmp_path, checkpoint, state=dict, totals=lambda: None, finite=lambda t: 0.0, epochs=3,
                   steps_per_epoch=10, max_steps=max_steps, label="t", device=torch.device("cpu"), main=False,
                   progress=False, world_size=1)

    def walk(run):
        return [(epoch, [step for step, _ in run.steps(epoch, range(run.start_step, 10))]) for epoch in run.epochs()]

    mid = {"rng": rng_state(), "epoch": 0, "step": 5, "total_steps": 5, "seconds": 0.0}
    assert walk(make(mid, 5)) == [(0, [])]
    assert walk(make({**mid, "epoch": 1, "step": 0}, 5)) == []  # on the boundary: nothing left
    assert walk(make(mid, 7)) == [(0, [5, 6])]  # below the cap: resumes where it stopped, up to it
    assert walk(make(None, 12)) == [(0, list(range(10))), (1, [0, 1])]
