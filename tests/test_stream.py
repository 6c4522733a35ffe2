"""Streamed image folders: batches decoded in workers, exact under resume and sharding, bad images handled."""
from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcanas.data import ImageDataset, imagefolder, load_dataset
from dcanas.data.dataset import channel_stats
from dcanas.data.stream import StreamedDataset, crop_generator, decode_image, make_loader, random_resized_box
from dcanas.errors import ConfigError, DatasetError

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def jpeg(rng: np.random.Generator, size: int = 20, grey: bool = False) -> bytes:
    shape = (size, size) if grey else (size, size, 3)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_folder(root: Path, n_train: int = 12, n_test: int = 4, seed: int = 0, grey: bool = False) -> Path:
    """train/ and test/ with three classes of random JPEGs."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label in ("cat", "ant", "bee"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / label / f"{i:03d}.jpg").write_bytes(jpeg(rng, grey=grey))
    return root


def epoch_batches(loader, epoch: int = 0, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader.epoch(epoch, start))


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images") / "data")


def streamed(path: Path, **options) -> StreamedDataset:
    data = load_dataset("imagefolder", path, image_size=16, data_mode="stream", **options)
    assert isinstance(data, StreamedDataset)
    return data


def test_streamed_dataset_reads_the_layout(folder):
    data = streamed(folder)
    assert data.classes == ["ant", "bee", "cat"] and data.in_channels == 3 and data.image_size == 16
    assert len(data.train_y) == 36 and len(data.test_y) == 12 and data.skipped == []
    assert torch.equal(data.train_y, torch.arange(3).repeat_interleave(12))
    # the statistics are those of the centre crops evaluation sees (every image: fewer than STATS_SAMPLE)
    crops = np.stack([decode_image(data.train.read(i), 16, 3, None) for i in range(36)]).transpose(0, 3, 1, 2)
    assert (data.mean, data.std) == channel_stats(torch.from_numpy(crops))
    x, y = next(iter(make_loader(data, "test", None, 12, augment=None, seed=0, shuffle=False)))
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.float32 and torch.equal(y, torch.arange(3).repeat_interleave(4))


def test_batches_do_not_depend_on_workers_processes_or_where_an_epoch_starts(folder):
    data = streamed(folder)
    args = dict(augment=True, seed=3, drop_last=True)
    reference = epoch_batches(make_loader(data, "train", None, 8, workers=0, **args), epoch=2)
    assert len(reference) == 4
    assert same(epoch_batches(make_loader(data, "train", None, 8, workers=2, **args), epoch=2), reference)
    # a resumed epoch starts at its batch and sees exactly the rest of the uninterrupted epoch
    assert same(epoch_batches(make_loader(data, "train", None, 8, workers=1, **args), 2, start=1), reference[1:])
    # two processes decode their own rows; together they are the one-process batch
    shards = [epoch_batches(make_loader(data, "train", None, 8, workers=0, rank=r, world_size=2, **args), epoch=2)
              for r in (0, 1)]
    assert all(torch.equal(torch.cat([a[0], b[0]]), ref[0]) for a, b, ref in zip(*shards, reference))
    other_epoch = epoch_batches(make_loader(data, "train", None, 8, workers=0, **args), epoch=3)
    assert not torch.equal(other_epoch[0][0], reference[0][0])  # new crops and order every epoch


def test_subset_indices_pick_their_images(folder):
    data = streamed(folder)
    ids = torch.tensor([5, 30, 2, 17])
    x, y = next(iter(make_loader(data, "train", ids, 4, augment=None, seed=0, shuffle=False, workers=0)))
    assert torch.equal(y, data.train_y[ids])
    whole = torch.cat([b[0] for b in make_loader(data, "train", None, 36, augment=None, seed=0, shuffle=False)])
    assert torch.equal(x, whole[ids])


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz")])
def test_archives_stream_like_the_folder(folder, tmp_path, mode, suffix):
    archive = tmp_path / f"images{suffix}"
    with tarfile.open(archive, mode) as tar:
        tar.add(folder, arcname="data")
    reference = epoch_batches(make_loader(streamed(folder), "train", None, 8, augment=True, seed=1, workers=1))
    from_archive = streamed(archive)
    assert (from_archive.train.tar is not None) == (mode == "w")  # a plain tar is read at offsets, not held
    assert same(epoch_batches(make_loader(from_archive, "train", None, 8, augment=True, seed=1, workers=1)), reference)


def test_evaluation_is_a_centre_crop_and_training_crops_stay_inside(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        image = np.zeros((40, 60), dtype=np.uint8)  # 60 wide, 40 high: black, with a white centre square
        image[10:30, 20:40] = 255
        Image.fromarray(image).save(root / split / "a" / "0.png")
    data = streamed(root)
    assert data.in_channels == 1
    x, _ = next(iter(make_loader(data, "test", None, 1, augment=None, seed=0, shuffle=False, workers=0)))
    pixels = (x[0, 0] * data.std[0] + data.mean[0]) * 255
    # the centre 35x35 of the 40x60 image, resized to 16: the white 20x20 square fills its middle 9 of 16
    assert pixels[4:12, 4:12].min() > 200 and pixels[0].max() < 60 and pixels[:, 0].max() < 60
    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, right, bottom = random_resized_box(60, 40, rng)
        assert 0 <= left < right <= 60 and 0 <= top < bottom <= 40
        area = (right - left) * (bottom - top) / (60 * 40)
        assert 0.05 < area <= 1.0 and 0.6 < (right - left) / (bottom - top) < 1.6
    # the same (seed, epoch, image) always draws the same crop
    assert random_resized_box(60, 40, crop_generator(1, 2, 3)) == random_resized_box(60, 40, crop_generator(1, 2, 3))


def test_bad_images_are_reported_once_and_skipped_or_refused(tmp_path):
    root = write_folder(tmp_path / "data", n_train=4, n_test=2)
    truncated = root / "train" / "ant" / "001.jpg"
    truncated.write_bytes(truncated.read_bytes()[:60])
    (root / "train" / "bee" / "002.jpg").write_bytes(b"")
    data = streamed(root)
    assert data.skipped == ["train/bee/002.jpg"] and len(data.train_y) == 11
    reports: list[str] = []
    loader = make_loader(data, "train", None, 4, augment=True, seed=0, drop_last=False, workers=1,
                         report=reports.append)
    for epoch in range(2):
        batches = epoch_batches(loader, epoch)
        assert sum(len(y) for _, y in batches) == 11  # a stand-in took the bad image's place
    assert len(reports) == 1 and "train/ant/001.jpg" in reports[0]
    strict = make_loader(streamed(root.parent / "data"), "train", None, 4, augment=True, seed=0, workers=0,
                         strict=True)
    with pytest.raises(DatasetError, match="cannot decode train/ant/001.jpg") as info:
        epoch_batches(strict)
    assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="002.jpg is empty"):
        streamed(root, strict=True)


def test_auto_streams_only_what_does_not_fit(folder, monkeypatch):
    small = load_dataset("imagefolder", folder, image_size=16, data_mode="auto")
    assert isinstance(small, ImageDataset)
    assert torch.equal(small.train_x, load_dataset("imagefolder", folder, image_size=16).train_x)
    monkeypatch.setattr(imagefolder, "memory_limit", lambda: 3 * 16 * 16 * 47)  # one image short of the 48
    assert isinstance(load_dataset("imagefolder", folder, image_size=16, data_mode="auto"), StreamedDataset)
    with pytest.raises(ConfigError, match="digits cannot"):
        load_dataset("digits", data_mode="stream")
    with pytest.raises(ConfigError, match="--data-mode must be"):
        load_dataset("imagefolder", folder, data_mode="fast")


def test_streaming_needs_a_size_when_images_differ(tmp_path):
    root = write_folder(tmp_path / "data", n_train=2, n_test=1)
    Image.new("RGB", (30, 20)).save(root / "train" / "ant" / "big.png")
    with pytest.raises(DatasetError, match="--image-size"):
        load_dataset("imagefolder", root, data_mode="stream")
    assert load_dataset("imagefolder", root, data_mode="stream", image_size=12).image_size == 12


# -- end to end: a streamed search killed and resumed ends as an uninterrupted one ---------------------------------

def _search_cmd(data_dir: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "dcanas", "search", "--dataset", "imagefolder", "--data-dir", str(data_dir),
            "--image-size", "16", "--data-mode", "stream", "--data-workers", "1", "--epochs", "4", "--batch-size",
            "16", "--search-cells", "3", "--search-channels", "8", "--cells", "3", "--channels", "8", "--seed", "2",
            "--max-params", "30K", "--quiet", "--run-dir", str(run_dir)]


def _alphas(run_dir: Path):
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return ckpt["model"]["alpha_normal"], ckpt["model"]["alpha_reduce"], (run_dir / "genotype.txt").read_text()


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("big") / "data", n_train=100, n_test=10, seed=1)


def test_streamed_search_killed_and_resumed_is_identical(big_folder, tmp_path):
    full = tmp_path / "full"
    subprocess.run(_search_cmd(big_folder, full), check=True, capture_output=True, timeout=600, env=ENV)
    config = json.loads((full / "config.json").read_text())
    assert config["data_mode"] == "stream"
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_search_cmd(big_folder, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    deadline = time.time() + 300
    history = run_dir / "history.json"
    while not (history.is_file() and history.read_text().strip().endswith("]")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    time.sleep(0.2)  # into the second of four epochs: the stop lands well before the end
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=120)
    assert not (run_dir / "genotype.txt").exists(), "the run finished before it was stopped"
    subprocess.run([sys.executable, "-m", "dcanas", "search", "--quiet", "--resume", str(run_dir)], check=True,
                   capture_output=True, timeout=600, env=ENV)
    resumed, reference = _alphas(run_dir), _alphas(full)
    assert torch.equal(resumed[0], reference[0]) and torch.equal(resumed[1], reference[1])
    assert resumed[2] == reference[2]


def test_streamed_training_runs_and_evaluates(big_folder, tmp_path):
    out = subprocess.run([sys.executable, "-m", "dcanas", "train", "DARTS_V2", "--dataset", "imagefolder",
                          "--data-dir", str(big_folder), "--image-size", "16", "--data-mode", "stream",
                          "--cells", "3", "--channels", "8", "--epochs", "1", "--batch-size", "32", "--quiet",
                          "--json", "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600, env=ENV)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert 0.0 <= result["test_acc"] <= 1.0 and math.isfinite(result["test_loss"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_mode"] == "stream"
    preprocessing = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["extra"]["preprocessing"]
    assert "centre crop" in preprocessing["resize"] and preprocessing["image_size"] == 16
    pytest.importorskip("onnxruntime")
    # int8 calibration and its accuracy check read the streamed set as training evaluated it
    out = subprocess.run([sys.executable, "-m", "dcanas", "export", str(tmp_path / "run"), "--onnx",
                          str(tmp_path / "m.onnx"), "--int8", str(tmp_path / "m8.onnx"), "--calibration-images", "30",
                          "--eval-images", "30", "--json"], capture_output=True, text=True, timeout=600, env=ENV)
    assert out.returncode == 0, out.stderr
    check = json.loads(out.stdout)["int8"]
    assert check["test_images"] == 30 and check["fp32"]["test_acc"] == pytest.approx(result["test_acc"], abs=0.04)  # one image of 30


def test_stream_on_a_dataset_that_cannot_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dcanas", "search", "--data-mode", "stream", "--run-dir",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["no images", "class only in test", "unreadable tar", "empty file, strict"])
def test_bad_streamed_folders_are_one_line_and_write_nothing(tmp_path, case):
    root = write_folder(tmp_path / "data", n_train=2, n_test=1)
    data_dir = root
    extra: list[str] = []
    if case == "no images":
        data_dir = tmp_path / "empty"
        (data_dir / "train" / "a").mkdir(parents=True)
    elif case == "class only in test":
        (root / "test" / "wasp").mkdir()
        (root / "test" / "wasp" / "0.jpg").write_bytes((root / "test" / "ant" / "000.jpg").read_bytes())
    elif case == "unreadable tar":
        data_dir = tmp_path / "broken.tar"
        data_dir.write_bytes(b"\0" * 100 + b"not a tar archive" * 50)
    else:
        (root / "train" / "ant" / "000.jpg").write_bytes(b"")
        extra = ["--strict"]
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "dcanas", "search", "--dataset", "imagefolder", "--data-dir",
                          str(data_dir), "--image-size", "16", "--data-mode", "stream", *extra, "--unconstrained",
                          "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not run_dir.exists()


def test_streamed_search_under_torchrun_matches_one_process(big_folder, tmp_path):
    """Each of 2 processes decodes only its rows of every global batch; together they make the batch that one
    process with 2 micro-batches makes (and so the same search, to float rounding of the gradient average)."""
    search = ["search", "--dataset", "imagefolder", "--data-dir", str(big_folder), "--image-size", "16", "--data-mode",
              "stream", "--data-workers", "1", "--epochs", "2", "--max-steps", "4", "--batch-size", "64",
              "--search-cells", "4", "--search-channels", "8", "--cells", "3", "--channels", "8", "--max-params",
              "30K", "--seed", "1", "--device", "cpu", "--quiet"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dcanas"]
    two = subprocess.run([*torchrun, *search, "--run-dir", str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=600, env=ENV)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "dcanas", *search, "--accum-steps", "2", "--run-dir",
                          str(tmp_path / "one")], capture_output=True, text=True, timeout=600, env=ENV)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("two", "one"))
    assert a["total_steps"] == b["total_steps"] == 4
    for name in ("alpha_normal", "alpha_reduce", "stem.0.weight", "classifier.weight"):
        assert torch.allclose(a["model"][name], b["model"][name], rtol=0, atol=1e-5), name
    assert (tmp_path / "two" / "genotype.txt").read_text() == (tmp_path / "one" / "genotype.txt").read_text()
