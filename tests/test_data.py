"""The dataset layer: every file format, downloads (against a local server), batches, augmentation."""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import tarfile
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dcanas.data import (
    DATASETS,
    Augment,
    BatchLoader,
    ImageDataset,
    balanced_indices,
    dataset_table,
    default_augment,
    load_dataset,
    split_indices,
)
from dcanas.data import cifar, download, idx, imagefolder
from dcanas.data.augment import CROP_X, CROP_Y, CUT_X, CUT_Y, FLIP
from dcanas.errors import ConfigError, DatasetError

CIFAR10_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "cifar10_jpg.tar.gz"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests off the real download cache, Debian's Fashion-MNIST and any mirror setting."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.setattr(idx, "DEBIAN_FASHION_DIR", tmp_path / "no-debian-package")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ----------------------------------------------------------------------------- registry, built-ins


def test_registry_names_and_unknown_dataset():
    assert DATASETS.names() == ["digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic", "tinyimagenet"]
    with pytest.raises(DatasetError, match=r"unknown dataset 'cifar11'; choose one of: digits, mnist.*tinyimagenet"):
        load_dataset("cifar11")


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"synthetic: unknown option\(s\) colour; valid options: channels"):
        load_dataset("synthetic", colour=3)
    with pytest.raises(ConfigError, match="valid options: none"):
        load_dataset("digits", seed=1)


def test_digits_split_and_scaling():
    d = load_dataset("digits")
    assert (d.name, d.in_channels, d.image_size, d.num_classes) == ("digits", 1, 8, 10)
    assert d.train_x.shape == (1437, 1, 8, 8) and d.test_x.shape == (360, 1, 8, 8)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert int(d.train_x.max()) == 255 and int(d.train_x.min()) == 0
    # Stratified: every class has 20 % (±1) of its images in the test split.
    counts = torch.bincount(d.test_y, minlength=10).float() / (
        torch.bincount(d.test_y, minlength=10) + torch.bincount(d.train_y, minlength=10)
    )
    assert torch.allclose(counts, torch.full((10,), 0.2), atol=0.01)
    again = load_dataset("digits")
    assert torch.equal(again.test_x, d.test_x) and torch.equal(again.test_y, d.test_y)
    x = d.train_x.double() / 255
    assert d.mean[0] == pytest.approx(x.mean().item()) and d.std[0] == pytest.approx(x.std(unbiased=False).item())


def test_image_size_resizes_any_dataset():
    d = load_dataset("digits", image_size=16)
    assert d.train_x.shape == (1437, 1, 16, 16) and d.test_x.shape == (360, 1, 16, 16)
    with pytest.raises(ConfigError):
        load_dataset("digits", image_size=0)


def test_synthetic_is_deterministic_and_learnable():
    d = load_dataset("synthetic", image_size=12, channels=2, classes=4, train_size=200, test_size=80, seed=3)
    assert d.train_x.shape == (200, 2, 12, 12) and d.test_x.shape == (80, 2, 12, 12) and d.num_classes == 4
    assert torch.equal(d.train_x, load_dataset("synthetic", image_size=12, channels=2, classes=4,
                                               train_size=200, test_size=80, seed=3).train_x)
    assert not torch.equal(d.train_x, load_dataset("synthetic", image_size=12, channels=2, classes=4,
                                                   train_size=200, test_size=80, seed=4).train_x)
    # Nearest class mean classifies the test set well: the classes really differ.
    means = torch.stack([d.train_x[d.train_y == c].float().mean(0) for c in range(4)]).flatten(1)
    pred = torch.cdist(d.test_x.float().flatten(1), means).argmin(1)
    assert (pred == d.test_y).float().mean() > 0.9


# ----------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def idx_bytes(array: np.ndarray) -> bytes:
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_files(rng: np.random.Generator, n_train: int = 30, n_test: int = 10) -> dict[str, bytes]:
    """The four MNIST files, gzipped, keyed by file name."""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    return {stem + ".gz": gzip.compress(idx_bytes(a), mtime=0) for stem, a in arrays.items()}


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    """Write {relative path: bytes} under folder; return folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def check_idx_dataset(d: ImageDataset, files: dict[str, bytes]) -> None:
    train = np.frombuffer(gzip.decompress(files["train-images-idx3-ubyte.gz"])[16:], np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.decompress(files["t10k-labels-idx1-ubyte.gz"])[8:], np.uint8)
    assert d.train_x.shape == (30, 1, 28, 28) and d.test_x.shape == (10, 1, 28, 28)
    assert np.array_equal(d.train_x[:, 0].numpy(), train) and np.array_equal(d.test_y.numpy(), labels)


def test_mnist_gz_and_plain_files(tmp_path: Path):
    files = idx_files(np.random.default_rng(0))
    d = load_dataset("mnist", write_files(tmp_path / "gz", files))
    check_idx_dataset(d, files)
    assert d.classes == [str(i) for i in range(10)] and d.mean[0] == pytest.approx(
        d.train_x.double().mean().item() / 255)
    plain = {name[:-3]: gzip.decompress(data) for name, data in files.items()}
    check_idx_dataset(load_dataset("mnist", write_files(tmp_path / "plain", plain)), files)
    # torchvision's layout: <root>/MNIST/raw/<files>
    check_idx_dataset(load_dataset("mnist", write_files(tmp_path / "tv" / "MNIST" / "raw", files).parents[1]), files)


def test_fashion_mnist_found_in_debian_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    files = idx_files(np.random.default_rng(1))
    monkeypatch.setattr(idx, "DEBIAN_FASHION_DIR", write_files(tmp_path / "debian", files))
    d = load_dataset("fashion-mnist")
    check_idx_dataset(d, files)
    assert d.classes[0] == "T-shirt/top" and d.classes[-1] == "Ankle boot"
    row = next(r for r in dataset_table() if r["name"] == "fashion-mnist")
    assert row["available"] and row["location"] == str(tmp_path / "debian")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "bad magic number"),  # a labels header on images
        (lambda raw: raw[:-100], "truncated"),
        (lambda raw: raw + b"\x00", "truncated or padded"),
    ],
)
def test_corrupt_idx_file_names_the_file(tmp_path: Path, damage, message: str):
    files = idx_files(np.random.default_rng(2))
    files["train-images-idx3-ubyte.gz"] = gzip.compress(damage(gzip.decompress(files["train-images-idx3-ubyte.gz"])))
    with pytest.raises(DatasetError, match=rf"train-images-idx3-ubyte\.gz.*{message}"):
        load_dataset("mnist", write_files(tmp_path, files))


def test_broken_gzip_stream_and_label_count(tmp_path: Path):
    files = idx_files(np.random.default_rng(3))
    broken = dict(files, **{"t10k-images-idx3-ubyte.gz": files["t10k-images-idx3-ubyte.gz"][:-30]})
    with pytest.raises(DatasetError, match=r"cannot read .*t10k-images-idx3-ubyte\.gz.*corrupt"):
        load_dataset("mnist", write_files(tmp_path / "a", broken))
    short = idx_files(np.random.default_rng(3), n_train=30)
    short["train-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.zeros(29)))
    with pytest.raises(DatasetError, match="30 images but train-labels-idx1-ubyte has 29 labels"):
        load_dataset("mnist", write_files(tmp_path / "b", short))


def test_missing_idx_files_say_what_to_do(tmp_path: Path):
    files = idx_files(np.random.default_rng(4))
    del files["t10k-labels-idx1-ubyte.gz"]
    folder = write_files(tmp_path / "partial", files)
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", folder)
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg and "t10k-labels-idx1-ubyte" in msg
    assert msg.endswith("pass --data-dir pointing at them or add --download")
    with pytest.raises(DatasetError, match=r"cache/dcanas/mnist"):  # no --data-dir: the cache was searched
        load_dataset("mnist")


# ----------------------------------------------------------------------------- CIFAR


def cifar_batch(rng: np.random.Generator, n: int, label_key: str, str_keys: bool, classes: int) -> bytes:
    batch = {"batch_label": "x", label_key: rng.integers(0, classes, n).tolist(),
             "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
    if not str_keys:  # official batches were pickled by Python 2: bytes keys
        batch = {k.encode(): v for k, v in batch.items()}
    return pickle.dumps(batch, protocol=2)


def cifar10_files(rng: np.random.Generator, str_keys: bool = False) -> dict[str, bytes]:
    files = {f"data_batch_{i}": cifar_batch(rng, 3, "labels", str_keys, 10) for i in range(1, 6)}
    files["test_batch"] = cifar_batch(rng, 4, "labels", str_keys, 10)
    names = [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                  "truck")]
    files["batches.meta"] = pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2)
    return files


def cifar100_files(rng: np.random.Generator) -> dict[str, bytes]:
    return {
        "train": cifar_batch(rng, 6, "fine_labels", True, 100),
        "test": cifar_batch(rng, 2, "fine_labels", True, 100),
        "meta": pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}, protocol=2),
    }


def tar_gz(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_cifar10_folder_layouts(tmp_path: Path):
    files = cifar10_files(np.random.default_rng(0))
    folder = write_files(tmp_path / "cifar-10-batches-py", files)
    d = load_dataset("cifar10", tmp_path)  # the parent of the standard folder
    assert d.train_x.shape == (15, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    assert d.classes[:2] == ["airplane", "automobile"] and d.num_classes == 10
    first = pickle.loads(files["data_batch_1"], encoding="bytes")
    assert np.array_equal(d.train_x[0].numpy(), first[b"data"][0].reshape(3, 32, 32))  # channel-major rows
    assert d.train_y[:3].tolist() == first[b"labels"]
    assert torch.equal(load_dataset("cifar10", folder).train_x, d.train_x)  # the folder itself


def test_cifar100_fine_labels_with_str_keys(tmp_path: Path):
    files = cifar100_files(np.random.default_rng(1))
    d = load_dataset("cifar100", write_files(tmp_path / "cifar-100-python", files))
    assert d.train_x.shape == (6, 3, 32, 32) and d.num_classes == 100 and d.classes[5] == "c5"
    assert d.test_y.tolist() == pickle.loads(files["test"])["fine_labels"]


def test_cifar_tar_gz_is_extracted_once(tmp_path: Path):
    files = cifar10_files(np.random.default_rng(2))
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(tar_gz({f"cifar-10-batches-py/{k}": v for k, v in files.items()}))
    d = load_dataset("cifar10", tmp_path)
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".extract")]  # staging folder cleaned up
    archive.unlink()  # the extracted folder is used from now on
    assert torch.equal(load_dataset("cifar10", tmp_path).train_x, d.train_x)


def test_cifar_numpy1_pickles_load(tmp_path: Path):
    """Batches written by numpy 1.x name numpy.core.multiarray, which numpy 2 renamed."""
    files = cifar10_files(np.random.default_rng(3))
    old = {k: v.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n") for k, v in files.items()}
    assert b"numpy.core.multiarray" in old["test_batch"] or not hasattr(np, "_core")
    d = load_dataset("cifar10", write_files(tmp_path, old))
    assert d.test_x.shape == (4, 3, 32, 32)


def test_cifar_pickle_cannot_run_code(tmp_path: Path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    files = cifar10_files(np.random.default_rng(4))
    files["test_batch"] = pickle.dumps({b"data": Evil()}, protocol=2)
    with pytest.raises(DatasetError, match=r"test_batch.*print is not allowed in a CIFAR batch"):
        load_dataset("cifar10", write_files(tmp_path, files))


def test_cifar_bad_batch_shape(tmp_path: Path):
    files = cifar10_files(np.random.default_rng(5))
    files["data_batch_3"] = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DatasetError, match=r"data_batch_3 holds data of shape \(2, 100\)"):
        load_dataset("cifar10", write_files(tmp_path, files))


def test_cifar_archive_with_path_traversal_is_refused(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(tar_gz({"../escaped": b"x", "cifar-10-batches-py/test_batch": b"y"}))
    with pytest.raises(DatasetError, match="unsafe member '../escaped'"):
        load_dataset("cifar10", data)
    assert not (tmp_path / "escaped").exists() and not (data / "cifar-10-batches-py").exists()


def test_missing_cifar_says_what_to_do(tmp_path: Path):
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", tmp_path / "nowhere")
    assert str(e.value) == (
        f"cifar10: no CIFAR-10 batches (expected cifar-10-batches-py/data_batch_1, data_batch_2, data_batch_3, "
        f"data_batch_4, data_batch_5, test_batch, batches.meta or cifar-10-python.tar.gz) in {tmp_path / 'nowhere'}; "
        "pass --data-dir pointing at them or add --download"
    )


# ----------------------------------------------------------------------------- imagefolder


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def folder_files(rng: np.random.Generator, grey: bool = False, size: int = 6) -> tuple[dict[str, bytes], dict]:
    """An ImageFolder tree as {relative path: PNG bytes}, and the arrays by path."""
    arrays = {}
    for split, n in (("train", 3), ("test", 2)):
        for label in ("zebra", "ant", "cat"):  # unsorted on purpose
            for i in range(n):
                shape = (size, size) if grey else (size, size, 3)
                arrays[f"{split}/{label}/{i}.png"] = rng.integers(0, 256, shape, dtype=np.uint8)
    return {k: png(v) for k, v in arrays.items()}, arrays


def test_imagefolder_directory_rgb_exact_pixels(tmp_path: Path):
    files, arrays = folder_files(np.random.default_rng(0))
    files["train/ant/.hidden.png"] = b"junk"  # hidden and non-image files are ignored
    files["train/ant/notes.txt"] = b"junk"
    d = load_dataset("imagefolder", write_files(tmp_path, files))
    assert d.classes == ["ant", "cat", "zebra"]
    assert d.train_x.shape == (9, 3, 6, 6) and d.test_x.shape == (6, 3, 6, 6)
    assert d.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert np.array_equal(d.train_x[0].numpy(), arrays["train/ant/0.png"].transpose(2, 0, 1))
    assert np.array_equal(d.test_x[-1].numpy(), arrays["test/zebra/1.png"].transpose(2, 0, 1))


def test_imagefolder_greyscale_and_mixed_modes(tmp_path: Path):
    files, arrays = folder_files(np.random.default_rng(1), grey=True)
    d = load_dataset("imagefolder", write_files(tmp_path / "grey", files))
    assert d.in_channels == 1 and np.array_equal(d.train_x[0, 0].numpy(), arrays["train/ant/0.png"])
    files["train/cat/rgb.png"] = png(np.zeros((6, 6, 3), np.uint8))
    mixed = load_dataset("imagefolder", write_files(tmp_path / "mixed", files))
    assert mixed.in_channels == 3  # one colour image makes all RGB; grey ones repeat their channel
    assert all(np.array_equal(mixed.train_x[0, c].numpy(), arrays["train/ant/0.png"]) for c in range(3))


def test_imagefolder_mixed_sizes_need_image_size(tmp_path: Path):
    files, _ = folder_files(np.random.default_rng(2))
    files["train/cat/big.png"] = png(np.zeros((9, 7, 3), np.uint8))
    root = write_files(tmp_path, files)
    with pytest.raises(DatasetError, match=r"differ in size \(0\.png is 6x6, big\.png is 7x9\); pass --image-size"):
        load_dataset("imagefolder", root)
    d = load_dataset("imagefolder", root, image_size=5)
    assert d.train_x.shape == (10, 3, 5, 5) and d.image_size == 5


def test_imagefolder_val_split_and_jpeg(tmp_path: Path):
    rng = np.random.default_rng(3)
    smooth = np.kron(rng.integers(0, 256, (2, 2, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # JPEG-friendly
    jpeg = png(smooth, "JPEG")
    files = {f"{s}/{c}/{i}.jpg": jpeg for s in ("train", "val") for c in ("a", "b") for i in range(2)}
    d = load_dataset("imagefolder", write_files(tmp_path, files))
    assert d.test_x.shape == (4, 3, 16, 16) and d.classes == ["a", "b"]
    assert np.array_equal(d.train_x[0].permute(1, 2, 0).numpy(), np.asarray(Image.open(io.BytesIO(jpeg))))


@pytest.mark.parametrize(
    "mode, suffix, prefix", [("w", ".tar", ""), ("w:gz", ".tar.gz", "mydata/"), ("w:gz", ".tgz", "./")]
)
def test_imagefolder_archives_match_directory(tmp_path: Path, mode: str, suffix: str, prefix: str):
    files, _ = folder_files(np.random.default_rng(4))
    reference = load_dataset("imagefolder", write_files(tmp_path / "dir", files))
    archive = tmp_path / f"images{suffix}"
    # Archive order is reversed: the loader must sort, not trust the member order.
    archive.write_bytes(tar_gz({prefix + k: v for k, v in reversed(files.items())}, mode))
    d = load_dataset("imagefolder", archive)
    assert torch.equal(d.train_x, reference.train_x) and torch.equal(d.test_y, reference.test_y)
    assert d.classes == reference.classes


def test_imagefolder_parallel_decoding_matches_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    files, _ = folder_files(np.random.default_rng(5))
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(tar_gz(files))
    serial = load_dataset("imagefolder", archive)
    pools = []

    class CountingPool(imagefolder.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(imagefolder, "ProcessPoolExecutor", CountingPool)
    monkeypatch.setattr(imagefolder, "PARALLEL_THRESHOLD", 4)
    monkeypatch.setattr(imagefolder, "CHUNK_SIZE", 3)
    parallel = load_dataset("imagefolder", archive)
    assert len(pools) == 1
    assert torch.equal(parallel.train_x, serial.train_x) and torch.equal(parallel.test_x, serial.test_x)
    assert torch.equal(parallel.test_y, serial.test_y)
    broken = tmp_path / "broken.tar"
    broken.write_bytes(tar_gz({**files, "train/cat/2.png": b"garbage"}, "w"))
    with pytest.raises(DatasetError, match=r"cannot decode train/cat/2\.png"):  # raised in a worker
        load_dataset("imagefolder", broken)


def test_imagefolder_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match="imagefolder: pass --data-dir"):
        load_dataset("imagefolder")
    with pytest.raises(DatasetError, match="neither a folder nor a .tar"):
        load_dataset("imagefolder", tmp_path / "missing")
    files, _ = folder_files(np.random.default_rng(6))
    with pytest.raises(DatasetError, match="no images in the layout train/<class>"):
        train_only = {k: v for k, v in files.items() if k.startswith("train")}
        load_dataset("imagefolder", write_files(tmp_path / "only-train", train_only))
    with pytest.raises(DatasetError, match="test/ has classes that train/ lacks: dog"):
        extra_class = {**files, "test/dog/0.png": files["test/ant/0.png"]}
        load_dataset("imagefolder", write_files(tmp_path / "extra", extra_class))
    with pytest.raises(DatasetError, match=r"cannot decode train/ant/1\.png"):
        load_dataset("imagefolder", write_files(tmp_path / "corrupt", {**files, "train/ant/1.png": b"not a png"}))
    bad_tar = tmp_path / "broken.tar.gz"
    bad_tar.write_bytes(tar_gz(files)[:200])
    with pytest.raises(DatasetError, match="cannot read .*broken.tar.gz"):
        load_dataset("imagefolder", bad_tar)


def test_imagefolder_with_no_decodable_image_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    """No image the size probe can read: the `cannot decode` error --image-size gives, not a traceback."""
    from dcanas.cli import main

    root = write_files(tmp_path / "img", {"train/a/x.png": b"junk, not a png", "test/a/y.png": b"junk too"})
    for mode, name in (("auto", "test/a/y.png"), ("stream", "train/a/x.png")):  # auto probes the first image
        with pytest.raises(DatasetError, match=rf"imagefolder: cannot decode {re.escape(name)} .*remove or replace"):
            load_dataset("imagefolder", root, data_mode=mode)
    run = tmp_path / "run"
    assert main(["search", "--dataset", "imagefolder", "--data-dir", str(root), "--max-steps", "1", "--quiet",
                 "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dcanas: error: imagefolder: cannot decode test/a/y.png") and "\n" not in err
    assert "Traceback" not in err and not run.exists()


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_JPEG.is_file(), reason=f"{CIFAR10_JPEG} is absent (shared test data)")
def test_imagefolder_real_cifar10_jpeg_tarball():
    d = load_dataset("imagefolder", CIFAR10_JPEG)
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert d.classes[0] == "airplane" and torch.bincount(d.test_y).tolist() == [1000] * 10
    assert d.mean == pytest.approx((0.4913, 0.4821, 0.4465), abs=2e-3)


# ----------------------------------------------------------------------------- downloads


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files`; honours `Range: bytes=N-` when `server.ranges`; can cut a response short."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.ranges:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:  # simulate a dropped connection
            body, srv.cut_after = body[: srv.cut_after], None
        srv.sent += len(body)  # counted before the write: the client may finish reading before this thread resumes
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    """A local HTTP server on a free port; DCANAS_DOWNLOAD_MIRROR points at it."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.ranges, httpd.cut_after, httpd.sent = {}, [], True, None, 0
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{httpd.server_address[1]}/mirror")
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def serve_mnist(server, monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> None:
    server.files.update({f"/mirror/{name}": data for name, data in files.items()})
    remotes = [replace(r, md5=md5(files[r.filename])) for r in idx.DOWNLOADS["mnist"]]
    monkeypatch.setitem(idx.DOWNLOADS, "mnist", remotes)


def test_download_mnist_from_mirror(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch):
    files = idx_files(np.random.default_rng(0))
    serve_mnist(server, monkeypatch, files)
    target = tmp_path / "mnist"
    check_idx_dataset(load_dataset("mnist", target, download=True), files)
    assert sorted(p.name for p in target.iterdir()) == sorted(files)  # no .part files left
    assert [path for path, _ in server.requests] == [f"/mirror/{r.filename}" for r in idx.DOWNLOADS["mnist"]]
    load_dataset("mnist", target, download=True)  # present now: nothing is fetched again
    assert len(server.requests) == 4


def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch):
    files = idx_files(np.random.default_rng(1))
    serve_mnist(server, monkeypatch, files)
    server.files["/mirror/train-images-idx3-ubyte.gz"] = b"tampered"
    with pytest.raises(DatasetError, match=r"mnist: checksum mismatch for http://127\.0\.0\.1:\d+/mirror/train-images"):
        load_dataset("mnist", tmp_path, download=True)
    assert not list(tmp_path.glob("train-images*"))


def test_download_resumes_a_part_file(tmp_path: Path, server):
    payload = bytes(range(256)) * 40
    server.files["/mirror/blob.bin"] = payload
    (tmp_path / "blob.bin.part").write_bytes(payload[:1000])
    path = download.download(download.Remote("https://example.org/x/blob.bin", md5(payload)), tmp_path, "test")
    assert path.read_bytes() == payload and not (tmp_path / "blob.bin.part").exists()
    assert server.requests == [("/mirror/blob.bin", "bytes=1000-")] and server.sent == len(payload) - 1000


def test_interrupted_download_resumes_next_time(tmp_path: Path, server):
    payload = np.random.default_rng(2).bytes(5000)
    server.files["/mirror/blob.bin"] = payload
    server.cut_after = 1234
    remote = download.Remote("https://example.org/blob.bin", md5(payload))
    with pytest.raises(DatasetError, match="stopped at 1234 of 5000 bytes; run again to resume"):
        download.download(remote, tmp_path, "test")
    assert (tmp_path / "blob.bin.part").stat().st_size == 1234 and not (tmp_path / "blob.bin").exists()
    assert download.download(remote, tmp_path, "test").read_bytes() == payload
    assert server.requests[-1] == ("/mirror/blob.bin", "bytes=1234-")


def test_download_without_range_support_restarts(tmp_path: Path, server):
    payload = b"abcdef" * 100
    server.files["/mirror/blob.bin"] = payload
    server.ranges = False
    (tmp_path / "blob.bin.part").write_bytes(b"stale bytes")
    path = download.download(download.Remote("https://example.org/blob.bin", md5(payload)), tmp_path, "test")
    assert path.read_bytes() == payload


def test_download_complete_part_file_gets_416(tmp_path: Path, server):
    payload = b"0123456789"
    server.files["/mirror/blob.bin"] = payload
    (tmp_path / "blob.bin.part").write_bytes(payload)
    path = download.download(download.Remote("https://example.org/blob.bin", md5(payload)), tmp_path, "test")
    assert path.read_bytes() == payload and server.sent == 0


def test_download_http_error(tmp_path: Path, server):
    with pytest.raises(
        DatasetError, match=r"test: downloading http://127\.0\.0\.1:\d+/mirror/gone\.bin failed: HTTP 404"
    ):
        download.download(download.Remote("https://example.org/gone.bin", "0" * 32), tmp_path, "test")


def test_download_cifar10_into_cache(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch):
    files = cifar10_files(np.random.default_rng(3))
    archive = tar_gz({f"cifar-10-batches-py/{k}": v for k, v in files.items()})
    server.files["/mirror/cifar-10-python.tar.gz"] = archive
    monkeypatch.setitem(cifar.DOWNLOADS, "cifar10", replace(cifar.DOWNLOADS["cifar10"], md5=md5(archive)))
    d = load_dataset("cifar10", download=True)
    cache = tmp_path / "cache" / "dcanas" / "cifar10"
    assert d.train_x.shape == (15, 3, 32, 32) and (cache / "cifar-10-batches-py" / "test_batch").is_file()
    assert load_dataset("cifar10").test_x.shape == (4, 3, 32, 32)  # later runs find the cache without --download
    row = next(r for r in dataset_table() if r["name"] == "cifar10")
    assert row["available"] and row["location"] == str(cache)


def test_mirror_url_replaces_the_directory(monkeypatch: pytest.MonkeyPatch):
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert download.resolve_url(url) == url
    monkeypatch.setenv(download.MIRROR_ENV, "http://intranet/datasets/")
    assert download.resolve_url(url) == "http://intranet/datasets/cifar-10-python.tar.gz"


def test_dataset_table_rows():
    rows = {r["name"]: r for r in dataset_table()}
    assert list(rows) == DATASETS.names()
    assert rows["digits"]["available"] and rows["synthetic"]["location"] == "built-in"
    assert not rows["mnist"]["available"] and rows["mnist"]["status"] == "needs --data-dir or --download"
    assert rows["imagefolder"]["status"] == "needs --data-dir" and not rows["imagefolder"]["download"]
    assert all(r["description"] for r in rows.values())
    columns = {"name", "description", "available", "status", "location", "download"}
    assert {k for r in rows.values() for k in r} == columns


# ----------------------------------------------------------------------------- split, loader, augment


def small_dataset(n: int = 37) -> ImageDataset:
    return load_dataset("synthetic", image_size=8, channels=3, classes=5, train_size=n, test_size=5)


def test_split_indices():
    d = small_dataset(40)
    train, val = split_indices(len(d.train_y), 0.5, seed=1)
    assert len(train) == len(val) == 20 and train.dtype == torch.int64
    assert sorted(torch.cat([train, val]).tolist()) == list(range(40))  # disjoint halves covering everything
    assert torch.equal(split_indices(40, 0.5, seed=1)[0], train) and not torch.equal(split_indices(40, 0.5, seed=2)[0],
                                                                                   train)
    assert len(split_indices(40, 0.75)[0]) == 30
    with pytest.raises(ConfigError):
        split_indices(40, 1.0)


def test_balanced_indices_are_even_deterministic_and_checked():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 5)
    keep = balanced_indices(y, 40, seed=1)
    assert torch.bincount(y[keep]).tolist() == [18, 17, 5]  # the small class is used up, the rest share evenly
    assert len(set(keep.tolist())) == 40  # distinct images
    assert torch.equal(balanced_indices(y, 40, seed=1), keep)
    assert not torch.equal(balanced_indices(y, 40, seed=2), keep)
    assert torch.bincount(y[balanced_indices(y, 9, seed=0)]).tolist() == [3, 3, 3]
    for size in (2, 86):
        with pytest.raises(ConfigError, match="between 3 .* and 85"):
            balanced_indices(y, size)


def loader(d: ImageDataset, batch_size: int = 8, **kw) -> BatchLoader:
    return BatchLoader(d.train_x, d.train_y, batch_size, mean=d.mean, std=d.std, **kw)


def test_loader_normalises_and_counts():
    d = small_dataset(37)
    plain = loader(d, shuffle=False)
    assert len(plain) == 5 and plain.num_samples == 37
    batches = list(plain.epoch(0))
    assert [len(y) for _, y in batches] == [8, 8, 8, 8, 5]
    x = torch.cat([b for b, _ in batches])
    expected = (d.train_x.float() / 255 - torch.tensor(d.mean).view(1, 3, 1, 1)) / torch.tensor(d.std).view(1, 3, 1, 1)
    assert x.dtype == torch.float32 and torch.allclose(x, expected, atol=1e-5)
    assert torch.equal(torch.cat([y for _, y in batches]), d.train_y)
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # normalised with the training set's own stats
    dropped = loader(d, drop_last=True)
    assert len(dropped) == 4 and dropped.num_samples == 32 and len(list(dropped.epoch(0))) == 4


def test_loader_shuffles_deterministically_per_epoch():
    d = small_dataset(37)
    a, b = loader(d, seed=5), loader(d, seed=5)
    ya = torch.cat([y for _, y in a.epoch(3)])
    assert torch.equal(ya, torch.cat([y for _, y in b.epoch(3)]))
    assert not torch.equal(a.permutation(3), a.permutation(4))
    assert not torch.equal(a.permutation(3), loader(d, seed=6).permutation(3))
    assert sorted(a.permutation(3).tolist()) == list(range(37))


def test_loader_resume_sees_the_same_batches():
    d = small_dataset(37)
    aug = Augment(crop_padding=2, flip=True, cutout=3)
    full = list(loader(d, augment=aug, seed=9).epoch(2))
    resumed = list(loader(d, augment=aug, seed=9).epoch(2, start_batch=3))  # a fresh loader, as after a crash
    assert len(resumed) == 2
    for (x, y), (rx, ry) in zip(full[3:], resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert not torch.equal(full[0][0], list(loader(d, augment=aug, seed=9).epoch(3))[0][0])


@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_shards_concatenate_to_the_single_process_batch(drop_last: bool):
    d = small_dataset(37)
    aug = Augment(crop_padding=2, flip=True, cutout=4)
    single = list(loader(d, augment=aug, drop_last=drop_last).epoch(1))
    ranks = [list(loader(d, augment=aug, drop_last=drop_last, rank=r, world_size=2).epoch(1)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for b, (x, y) in enumerate(single):
        assert len(ranks[0][b][1]) == (len(y) + 1) // 2
        assert torch.equal(torch.cat([ranks[0][b][0], ranks[1][b][0]]), x)
        assert torch.equal(torch.cat([ranks[0][b][1], ranks[1][b][1]]), y)


def test_loader_rejects_bad_world_size():
    d = small_dataset()
    with pytest.raises(ConfigError, match="multiple of the world size 3"):
        loader(d, batch_size=8, world_size=3)
    with pytest.raises(ConfigError, match="rank 2"):
        loader(d, rank=2, world_size=2)


def params(n: int, **columns: int) -> torch.Tensor:
    p = torch.zeros((n, 5), dtype=torch.int64)
    for name, value in columns.items():
        p[:, {"crop_y": CROP_Y, "crop_x": CROP_X, "flip": FLIP, "cut_y": CUT_Y, "cut_x": CUT_X}[name]] = value
    return p


def test_flip_mirrors_left_right():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    aug = Augment(flip=True)
    p = params(2)
    p[0, FLIP] = 1
    out = aug.apply(x, p)
    assert torch.equal(out[0, :, :, 0], x[0, :, :, 4]) and torch.equal(out[0], x[0].flip(-1))
    assert torch.equal(out[1], x[1])  # not chosen for flipping


def test_cutout_zeros_a_square_clipped_at_borders():
    x = torch.ones((3, 2, 10, 10))
    aug = Augment(cutout=4)
    p = params(3)
    p[0, CUT_Y], p[0, CUT_X] = 5, 5  # inside: rows 3..6, cols 3..6
    p[1, CUT_Y], p[1, CUT_X] = 0, 9  # corner: rows 0..1, cols 7..9
    p[2, CUT_Y], p[2, CUT_X] = 9, 0  # corner: rows 7..9, cols 0..1
    out = aug.apply(x, p)
    assert (out[0] == 0).sum() == 2 * 16 and (out[0, :, 3:7, 3:7] == 0).all()
    assert (out[1] == 0).sum() == 2 * 2 * 3 and (out[1, :, 0:2, 7:10] == 0).all()
    assert (out[2] == 0).sum() == 2 * 3 * 2 and (out[2, :, 7:10, 0:2] == 0).all()


def test_crop_is_a_shifted_copy_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.randn((6, 3, 8, 8))
    aug = Augment(crop_padding=3)
    p = aug.sample(6, 8, 8, torch.Generator().manual_seed(1))
    assert p[:, CROP_Y].max() <= 6 and len(set(p[:, CROP_Y].tolist())) > 1  # per-image offsets in [0, 2p]
    out = aug.apply(x, p)
    assert out.shape == x.shape
    padded = F.pad(x, (3, 3, 3, 3))
    for i in range(6):
        dy, dx = int(p[i, CROP_Y]), int(p[i, CROP_X])
        assert torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
    centred = aug.apply(x, params(6, crop_y=3, crop_x=3))
    assert torch.equal(centred, x)  # offset p is the identity


def test_augment_call_is_seeded():
    x = torch.randn((16, 3, 8, 8))
    aug = Augment(crop_padding=2, flip=True, cutout=3)
    a = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a[0], a[1]) and a.shape == x.shape


def test_default_augment():
    assert default_augment("cifar10", 32, cutout=16) == Augment(crop_padding=4, flip=True, cutout=16)
    assert default_augment("fashion-mnist", 28) == Augment(crop_padding=4, flip=False)
    assert default_augment("digits", 8) == Augment(crop_padding=1, flip=False)
    assert default_augment("imagefolder", 64).crop_padding == 8 and default_augment("imagefolder", 64).flip


def test_a_new_dataset_is_added_in_one_place(monkeypatch: pytest.MonkeyPatch):
    """Registering a loader with its DatasetInfo is all a dataset needs: presets, budget and flips follow."""
    from dcanas.data import dataset_info
    from dcanas.data.dataset import DATASET_INFO, DatasetInfo
    from dcanas.search_config import make_search_config
    from dcanas.train_loop import make_config

    info = DatasetInfo("toy-photos", "a test dataset", flip=True, search_preset={"epochs": 3, "arch_lr": 1e-2},
                       train_preset={"epochs": 7, "cutout": 0}, default_budget={"max_flops": 5_000_000})
    monkeypatch.setitem(DATASET_INFO, "toy-photos", info)
    assert dataset_info("Toy-Photos") is info
    search = make_search_config("toy-photos")
    assert (search.epochs, search.arch_lr, search.max_flops) == (3, 1e-2, 5_000_000)
    assert make_search_config("toy-photos", max_params=1e5).max_flops is None  # a typed budget replaces it
    assert make_search_config("toy-photos", epochs=9).epochs == 9
    train = make_config("DARTS_V2", dataset="toy-photos")
    assert (train.epochs, train.cutout) == (7, 0)
    assert default_augment("toy-photos", 32).flip
    # a name nobody registered gets the defaults, not an error here (loading it is what fails)
    assert dataset_info("nothing-here").search_preset == {} and not dataset_info("nothing-here").flip
    assert make_search_config("nothing-here").epochs == make_search_config("cifar10").epochs


def _tiny_imagenet(root: Path, *, zip_to: Path | None = None) -> dict[str, int]:
    """A 3-class TinyImageNet in its own layout (PNG, so pixels are exact); returns each file's colour value."""
    import zipfile

    from PIL import Image

    wnids = ["n02", "n01", "n03"]  # wnids.txt is not sorted in the real set either
    colour = {}
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\nn03\tbullfrog\nn99\tother\n")
    for k, wnid in enumerate(wnids):
        (base / "train" / wnid / "images").mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("boxes are ignored\n")
        for i in range(2):
            value = 10 * k + i
            Image.new("RGB", (4, 4), (value, value, value)).save(base / "train" / wnid / "images" / f"{wnid}_{i}.png")
            colour[f"train/{wnid}/{i}"] = value
    lines = []
    for i, wnid in enumerate(["n03", "n01"]):
        name = f"val_{i}.png"
        Image.new("L", (4, 4), 200 + i).save(base / "val" / "images" / name)  # greyscale: becomes RGB
        lines.append(f"{name}\t{wnid}\t0\t0\t3\t3")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    if zip_to is not None:
        with zipfile.ZipFile(zip_to, "w") as z:
            for path in sorted(base.rglob("*")):
                z.write(path, path.relative_to(root).as_posix())
    return colour


@pytest.mark.parametrize("packed", ["folder", "parent", "zip"])
def test_tinyimagenet_own_layout(tmp_path: Path, packed: str):
    zip_path = tmp_path / "tiny-imagenet-200.zip"
    _tiny_imagenet(tmp_path / "src", zip_to=zip_path)
    where = {"folder": tmp_path / "src" / "tiny-imagenet-200", "parent": tmp_path / "src", "zip": zip_path}[packed]
    data = load_dataset("tinyimagenet", str(where))
    assert data.classes == ["goldfish", "salamander", "bullfrog"]  # sorted wnids n01, n02, n03, named by words.txt
    assert data.train_x.shape == (6, 3, 4, 4) and data.test_x.shape == (2, 3, 4, 4)
    assert data.train_y.tolist() == [0, 0, 1, 1, 2, 2]
    # train/n01 was written as the second wnid (k=1): values 10, 11; n02 (k=0): 0, 1
    assert data.train_x[:, 0, 0, 0].tolist() == [10, 11, 0, 1, 20, 21]
    assert data.test_y.tolist() == [2, 0] and data.test_x[:, :, 0, 0].tolist() == [[200] * 3, [201] * 3]


def test_tinyimagenet_bad_layouts_are_one_line(tmp_path: Path):
    from dcanas.errors import DatasetError

    _tiny_imagenet(tmp_path)
    base = tmp_path / "tiny-imagenet-200"
    annotations = base / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_9.png\tn77\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match="names no class of wnids.txt"):
        load_dataset("tinyimagenet", str(base))
    annotations.unlink()
    with pytest.raises(DatasetError, match="has no val/val_annotations.txt"):
        load_dataset("tinyimagenet", str(base))
    with pytest.raises(DatasetError, match="neither a folder nor a .zip"):
        load_dataset("tinyimagenet", str(tmp_path / "missing"))
