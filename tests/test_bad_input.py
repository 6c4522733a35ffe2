"""Bad input, tried as a new user would: every case is one line on stderr, exit status 2, no traceback, and
nothing already in a run folder changed. One corpus, checked at the command line's boundary."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from dcanas.cli import main
from dcanas.errors import RunDirError
from dcanas.runs import CHECKPOINT, save_checkpoint

DIGITS = ["--dataset", "digits"]
GENOTYPE_EDGES = [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]] * 4


def one_line_error(capsys, argv: list[str], needle: str) -> str:
    """Run the CLI in-process; assert exit 2 with a single `dcanas: error:` line containing `needle`."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1] if err else ""
    assert code == 2, (argv, err)
    assert last.startswith("dcanas: error:") and "Traceback" not in err, err
    assert needle in last, (needle, last)
    return last


@pytest.mark.parametrize("argv, needle", [
    (["search", "--lr", "nan"], "--lr must be a finite number > 0"),
    (["search", "--lr", "-1"], "--lr must be a finite number > 0"),
    (["search", "--arch-lr", "nan"], "--arch-lr must be a finite number > 0"),
    (["search", "--lambda-lr", "-0.5"], "--lambda-lr must be a finite number >= 0"),
    (["train", "DARTS_V2", *DIGITS, "--lr", "nan"], "--lr must be a finite number > 0"),
    (["train", "DARTS_V2", *DIGITS, "--lr", "-0.1"], "--lr must be a finite number > 0"),
    (["search", "--device", "foo"], "is not a device"),
    (["train", "DARTS_V2", *DIGITS, "--device", "foo"], "is not a device"),
    (["search", "--bottleneck", "3"], "--bottleneck must divide"),
    (["search", "--bottleneck", "0"], "--bottleneck must divide"),
    (["search", "--search-cells", "0"], "--search-cells must be in 3.."),
    (["search", "--search-cells", "1"], "--search-cells must be in 3.."),
    (["search", "--max-steps", "0"], "--max-steps must be at least 1"),
    (["train", "DARTS_V2", *DIGITS, "--max-steps", "0"], "--max-steps must be at least 1"),
    (["search", "--dataset", "synthetic", "--image-size", "100000"], "--image-size must be in 4..1024"),
    (["search", "--search-channels", "100000"], "--search-channels must be even and in 2..1024"),
    (["search", "--channels", "100000"], "--channels must be 'auto' or in 2..1024"),
    (["train", "DARTS_V2", *DIGITS, "--channels", "100000"], "--channels must be in 2..1024"),
    (["count", "DARTS_V2", "--image-size", "10000000"], "--image-size must be in"),
    (["count", "DARTS_V2", "--channels", "100000"], "--channels must be in"),
    (["count", "DARTS_V2", "--classes", "0"], "--classes must be in 1..100000, got 0"),
    (["count", "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)])"], "genotype text lacks reduce=[...]"),
    (["count", "DARTS_V2", "--dataset", "fashoin-mnist"], "dataset 'fashoin-mnist' has no published setting"),
    (["count", "DARTS_V2", "--dataset", "mine", "--in-channels", "3", "--image-size", "64"], "--classes"),
    (["random-cell", "--max-params", "300K", "--dataset", "fashoin-mnist"], "known: cifar10, cifar100"),
    (["search", "--unconstrained", "--max-params", "100K"], "--unconstrained searches without any budget; drop it "
                                                            "or --max-params"),
    (["search", "--repeat-jobs", "2"], "--repeat-jobs sets how many searches of --repeats N run at once"),
    (["search", "--repeats", "2", "--repeat-jobs", "0"], "--repeat-jobs must be at least 1, got 0"),
    (["lug", "build", "--workers", "0"], "--workers must be at least 1, got 0"),
    (["lug", "build", "--threads", "0"], "--threads must be at least 1, got 0"),
    (["search", "--latency-device", "pixel3"], "--latency-device reads NAS-Bench-201's table (--space nb201)"),
    (["search", "--bench-table", "t.csv", "--latency-device", "pixel3"], "--latency-device and --bench-table read"),
    (["search", "--space", "nb201", "--dataset", "synthetic", "--bench-table", "nosuch.csv"],
     "--bench-table nosuch.csv: no such file"),
    (["profile", "--ops", "--dataset", "digits", "--out", "."], "--out . is a folder; give the latency table's"),
    (["export", "DARTS_V2", "--dataset", "digits", "--cells", "5", "--channels", "8", "--onnx", "."],
     "cannot write .: it is a folder; give a file name"),
    # a dry run refuses what the real run would (the same checks, before any training)
    (["search", "--dry-run", "--accum-steps", "3"], "must be a positive multiple of processes x --accum-steps"),
    (["search", "--dry-run", "--batch-size", "100000"], "--batch-size 100000 exceeds the 718 training images"),
    (["search", "--dry-run", "--train-subset", "5"], "a training subset must hold between 10"),
    (["search", "--epochs", "0"], "--epochs must be an integer >= 1"),
    (["search", "--derive-by", "votes"], "--derive-by must be one of alphas, perturbation, not 'votes'"),
    (["search", "--derive-images", "0"], "--derive-images must be an integer >= 1"),
    (["search", "--reduce-cell", "NOPE"], "unknown --reduce-cell 'NOPE'; choose a named genotype: "),
    (["search", "--reduce-cell", "DARTS_V2", "--derive-by", "perturbation"], "give one of them"),
    (["search", "--arch-lr", "-1e-3"], "--arch-lr must be a finite number > 0, got -0.001"),
    (["count", "DARTS_V2", "--cells", "-3"], "--cells must be in 1..64, got -3"),
    (["search", "--space", "nb201", "--dataset", "synthetic", "--reduce-cell", "DARTS_V2"],
     "the nb201 space has one cell type: drop --reduce-cell"),
])
def test_bad_options_are_one_line(tmp_path, capsys, argv, needle):
    run_dir = tmp_path / "run"
    takes_run_dir = argv[0] in ("search", "train")
    one_line_error(capsys, argv + (["--run-dir", str(run_dir)] if takes_run_dir else []), needle)
    assert not run_dir.exists()  # refused before anything was written


def test_negative_values_reach_their_own_check_but_flags_and_the_separator_are_left_alone():
    from dcanas.cli import build_parser, flag_options, glue_negative_values

    flags = flag_options(build_parser())
    assert {"--json", "--quiet", "--dry-run"} <= flags and "--max-params" not in flags
    assert glue_negative_values(["search", "--max-params", "-3M", "--seed", "4"], flags) == \
        ["search", "--max-params=-3M", "--seed", "4"]
    assert glue_negative_values(["count", "--json", "-1"], flags) == ["count", "--json", "-1"]
    assert glue_negative_values(["profile", "--", "-1.onnx"], flags) == ["profile", "--", "-1.onnx"]
    assert glue_negative_values(["count", "--cells=-3", "-x"], flags) == ["count", "--cells=-3", "-x"]


@pytest.mark.parametrize("argv, needle", [
    (["search", "--max-params", "nan"], "--max-params: 'nan' must be a positive, finite number"),
    (["search", "--max-params", "lots"], "is not a number"),
    # argparse alone reads '-3M' as an option and says "expected one argument"; the value's own check speaks instead
    (["search", "--max-params", "-3M"], "--max-params: '-3M' must be a positive, finite number"),
    (["search", "--max-flops", "-.5G"], "--max-flops: '-.5G' must be a positive, finite number"),
    (["search", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["train", "DARTS_V2", "--epochs", "two"], "invalid int value"),
])
def test_argument_errors_are_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and needle in err and "--help" in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", [["search"], ["train", "DARTS_V2", *DIGITS]])
def test_cuda_without_a_gpu(tmp_path, capsys, command):
    one_line_error(capsys, [*command, "--device", "cuda", "--run-dir", str(tmp_path / "r")], "no CUDA GPU")


@pytest.mark.parametrize("index, needle", [
    ("1e309", "must be an integer node index"), ("true", "must be an integer node index"),
    ("2.7", "must be an integer node index"), ("99999999999999999999", "it must be an integer in 0..1"),
])
def test_genotype_indices_must_be_integers(tmp_path, capsys, index, needle):
    text = json.dumps({"normal": GENOTYPE_EDGES, "reduce": GENOTYPE_EDGES})
    text = text.replace('["sep_conv_3x3", 0]', f'["sep_conv_3x3", {index}]', 1)  # raw JSON, as a user might write
    path = tmp_path / "g.json"
    path.write_text(text)
    one_line_error(capsys, ["count", str(path)], needle)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"normal": ' + "[" * 5000 + "]" * 5000 + "}",
                                  "Genotype(normal=" + "[" * 5000 + "]" * 5000 + ")"])
def test_deeply_nested_genotype_files(tmp_path, capsys, text):
    path = tmp_path / "g.json"
    path.write_text(text)
    one_line_error(capsys, ["count", str(path)], "")


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory) -> Path:
    """A finished two-step digits search."""
    run_dir = tmp_path_factory.mktemp("search") / "run"
    assert main(["search", "--max-steps", "2", "--epochs", "1", "--quiet", "--run-dir", str(run_dir)]) == 0
    return run_dir


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resume_with_new_options_is_refused(tiny_search, capsys):
    before = snapshot(tiny_search)
    one_line_error(capsys, ["search", "--resume", str(tiny_search), "--epochs", "8", "--max-params", "100K"],
                   "takes no search options (got --epochs, --max-params)")
    assert snapshot(tiny_search) == before


def test_resume_with_a_config_file_is_refused(tiny_search, capsys):
    before = snapshot(tiny_search)
    one_line_error(capsys, ["search", "--resume", str(tiny_search), "--config", str(tiny_search / "config.json")],
                   "takes no search options (got --config)")
    assert snapshot(tiny_search) == before


def test_resuming_a_run_that_max_steps_finished_changes_nothing(tiny_search, tmp_path, capsys):
    before = snapshot(tiny_search)
    one_line_error(capsys, ["search", "--resume", str(tiny_search)], "already stopped at --max-steps 2")
    assert snapshot(tiny_search) == before  # no extra step, no rewritten result
    train_dir = tmp_path / "train"
    assert main(["train", "DARTS_V2", *DIGITS, "--max-steps", "1", "--epochs", "1", "--quiet",
                 "--run-dir", str(train_dir)]) == 0
    capsys.readouterr()
    trained = snapshot(train_dir)
    one_line_error(capsys, ["train", "--resume", str(train_dir)], "train again in a new run folder")
    assert snapshot(train_dir) == trained


def test_resume_of_the_wrong_kind_of_run(tiny_search, tmp_path, capsys):
    before = snapshot(tiny_search)
    one_line_error(capsys, ["train", "--resume", str(tiny_search)], "is not a `dcanas train` checkpoint")
    train_dir = tmp_path / "train"
    assert main(["train", "DARTS_V2", *DIGITS, "--max-steps", "1", "--epochs", "1", "--quiet",
                 "--run-dir", str(train_dir)]) == 0
    capsys.readouterr()
    save_checkpoint(train_dir / CHECKPOINT, torch.load(train_dir / CHECKPOINT, weights_only=True))
    one_line_error(capsys, ["search", "--resume", str(train_dir)], "it is a training run")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    save_checkpoint(foreign / CHECKPOINT, {"weights": torch.ones(3)})
    one_line_error(capsys, ["search", "--resume", str(foreign)], "it was not written by dcanas")
    assert snapshot(tiny_search) == before


def test_training_a_search_on_another_dataset_is_refused(tiny_search, tmp_path, capsys):
    one_line_error(capsys, ["train", str(tiny_search), "--dataset", "fashion-mnist", "--run-dir",
                            str(tmp_path / "t")], "would resize every image to 8x8")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("damage", ["missing-keys", "bad-setting", "not-a-dict", "truncated"])
def test_export_of_a_damaged_model_file(tmp_path, capsys, damage):
    from dcanas.model_io import save_model
    from dcanas.spaces.darts.genotype import GENOTYPES
    from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for

    model = tmp_path / "model.pt"
    save_model(model, EvalNetwork(GENOTYPES.get("DARTS_V2"), eval_setting_for("digits", cells=5, channels=8)))
    state = torch.load(model, weights_only=True)
    if damage == "missing-keys":
        state["state_dict"] = dict(list(state["state_dict"].items())[:5])
    elif damage == "bad-setting":
        state["setting"]["cells"] = "many"
    elif damage == "not-a-dict":
        state = [1, 2, 3]
    save_checkpoint(model, state)
    if damage == "truncated":
        model.write_bytes(model.read_bytes()[:1000])
    before = model.read_bytes()
    last = one_line_error(capsys, ["export", str(model)], str(model))
    assert "restart the run" not in last  # a model file is not a run to restart
    assert model.read_bytes() == before and not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("command", [["search"], ["train", "DARTS_V2", *DIGITS]])
def test_a_diverging_run_stops_with_a_clear_error(tmp_path, capsys, command):
    run_dir = tmp_path / "run"
    one_line_error(capsys, [*command, "--lr", "1e30", "--max-steps", "4", "--epochs", "1", "--quiet",
                            "--run-dir", str(run_dir)], "diverged")
    assert not (run_dir / "model.pt").exists() and not (run_dir / "result.json").exists()


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from dcanas import runs

    path = tmp_path / CHECKPOINT
    save_checkpoint(path, {"step": torch.tensor(1)})
    before = path.read_bytes()
    real_fdopen = os.fdopen

    def full_disk(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)

        def write(data):
            raise OSError(errno.ENOSPC, "No space left on device")

        f.write = write
        return f

    monkeypatch.setattr(runs.os, "fdopen", full_disk)
    with pytest.raises(RunDirError, match="No space left on device.*previous version is kept"):
        save_checkpoint(path, {"step": torch.tensor(2)})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]


def _run_search_briefly(run_dir):
    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import run_search

    run_search(SearchConfig(epochs=1, max_steps=3, max_params=200_000), run_dir, progress=False,
               log=lambda message: None)


def _run_training_briefly(run_dir):
    from dcanas.train_loop import make_config, run_training

    config = make_config("DARTS_V2", dataset="digits", cells=3, channels=8, batch_size=32, epochs=1, max_steps=3,
                         device="cpu")
    result = run_training(config, run_dir, progress=False, log=lambda message: None)
    assert result.steps == 3 and result.stopped_early  # within its only epoch: still stopped early


@pytest.mark.parametrize("run_briefly", [_run_search_briefly, _run_training_briefly], ids=["search", "train"])
def test_long_epochs_checkpoint_by_the_clock(tmp_path, monkeypatch, run_briefly):
    """Both loops stand on run_loop.Run, so both checkpoint mid-epoch by the clock, not only at epoch ends."""
    from dcanas import run_loop

    saved: list[tuple[int, int]] = []
    real_save = run_loop.save_checkpoint

    def record(path, state):
        saved.append((state["epoch"], state["step"]))
        real_save(path, state)

    monkeypatch.setattr(run_loop, "save_checkpoint", record)
    monkeypatch.setattr(run_loop, "CHECKPOINT_EVERY_S", 0.0)
    run_briefly(tmp_path / "run")
    assert (0, 1) in saved and (0, 2) in saved  # mid-epoch, by the clock, before the epoch-end checkpoint


def test_byte_mutated_cifar_batches_never_escape_as_tracebacks(tmp_path):
    """A fuzz corpus: 400 copies of a small CIFAR-10 folder, each with 1-4 random bytes changed in one file.
    Every load either works or raises DatasetError (3,000 such cases were run once while fixing this)."""
    import pickle
    import random
    import shutil

    import numpy as np

    from dcanas.data import load_dataset
    from dcanas.errors import DatasetError

    base = tmp_path / "base" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [int(v) for v in
                                                                                       rng.integers(0, 10, 4)]}
        (base / name).write_bytes(pickle.dumps(batch, protocol=2))
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]},
                                                     protocol=2))
    assert len(load_dataset("cifar10", str(base.parent)).train_y) == 20
    chooser = random.Random(0)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(400):
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base.parent, work)
        target = work / "cifar-10-batches-py" / chooser.choice(["data_batch_1", "test_batch", "batches.meta"])
        data = bytearray(target.read_bytes())
        for _ in range(chooser.randint(1, 4)):
            data[chooser.randrange(len(data))] = chooser.randrange(256)
        target.write_bytes(bytes(data))
        try:
            load_dataset("cifar10", str(work))
            outcomes["loaded"] += 1
        except DatasetError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and sum(outcomes.values()) == 400


def test_the_dataset_help_names_every_preset(capsys):
    from dcanas.spaces.darts.network import PRESETS

    with pytest.raises(SystemExit):
        main(["count", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in PRESETS), help_text  # the help's list is written out, not imported


def test_a_training_run_given_where_a_genotype_or_search_belongs(tmp_path, capsys):
    train_dir = tmp_path / "train"
    assert main(["train", "DARTS_V2", *DIGITS, "--max-steps", "1", "--epochs", "1", "--quiet",
                 "--run-dir", str(train_dir)]) == 0
    capsys.readouterr()
    before = snapshot(train_dir)
    one_line_error(capsys, ["count", str(train_dir)], "is a training run (it holds model.pt, not a genotype)")
    one_line_error(capsys, ["train", str(train_dir), "--run-dir", str(tmp_path / "again")], "dcanas train --resume")
    one_line_error(capsys, ["land", str(train_dir), "--max-params", "150K"], "is a training run; land the search run")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["land", str(tmp_path / "empty"), "--max-params", "150K"],
                   "give the run folder of a finished `dcanas search`")
    assert snapshot(train_dir) == before and not (tmp_path / "again").exists()
