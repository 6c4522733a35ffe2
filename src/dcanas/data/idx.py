"""MNIST and Fashion-MNIST: the four standard IDX files, gzipped or not, read with numpy."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from .dataset import DatasetInfo, ImageDataset, corrupt_file, obtain, register_dataset
from .download import Remote, download

# (images, labels) file stems of each split, as published.
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
STEMS = [stem for pair in SPLITS.values() for stem in pair]
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes; 3 or 1 dimensions

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's mirror of LeCun's files
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Published MD5s of the gzipped files (the same constants torchvision checks). Tests patch these.
DOWNLOADS: dict[str, list[Remote]] = {
    "mnist": [
        Remote(_MNIST_URL + "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        Remote(_MNIST_URL + "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        Remote(_MNIST_URL + "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        Remote(_MNIST_URL + "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ],
    "fashion-mnist": [
        Remote(_FASHION_URL + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Remote(_FASHION_URL + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        Remote(_FASHION_URL + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        Remote(_FASHION_URL + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ],
}
CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}
# Debian's dataset-fashion-mnist package installs the four .gz files here.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# torchvision keeps the raw files in <root>/<Class>/raw; accept a root laid out that way too.
_TORCHVISION_DIRS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}
_EXPECTED = f"IDX files (expected {', '.join(stem + '.gz' for stem in STEMS)}, gzipped or not)"


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """`folder/stem.gz` or `folder/stem`, whichever exists."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def idx_folder(folder: Path, name: str) -> Path | None:
    """The folder (`folder` or its torchvision-style subfolder) that holds all four files."""
    for candidate in (folder, folder / _TORCHVISION_DIRS[name]):
        if all(find_idx_file(candidate, stem) for stem in STEMS):
            return candidate
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file's array (uint8), after checking its magic number and size."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise corrupt_file(path, e) from None
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim or int.from_bytes(raw[:4], "big") != magic:
        raise DatasetError(f"{path} is not an IDX file of the expected kind (bad magic number); replace it")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetError(
            f"{path} is truncated or padded: header says {shape}, found {body.size} bytes of data; replace it"
        )
    return body.reshape(shape)


def _read_split(folder: Path, images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx(find_idx_file(folder, images), IMAGES_MAGIC)  # type: ignore[arg-type]
    y = read_idx(find_idx_file(folder, labels), LABELS_MAGIC)  # type: ignore[arg-type]
    if len(x) != len(y):
        raise DatasetError(f"{folder}: {images} has {len(x)} images but {labels} has {len(y)} labels")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def _load(name: str, data_dir: Path | None, download_missing: bool) -> ImageDataset:
    def fetch(target: Path) -> None:
        for remote in DOWNLOADS[name]:
            download(remote, target, name)

    folder = idx_folder(obtain(name, data_dir, download_missing, _EXPECTED, fetch), name)
    assert folder is not None  # obtain() only returns folders where idx_folder() finds the files
    (train_x, train_y), (test_x, test_y) = (_read_split(folder, *SPLITS[s]) for s in ("train", "test"))
    n = len(CLASSES[name])
    labels = torch.cat([train_y, test_y])
    if len(labels) and int(labels.max()) >= n:
        raise DatasetError(f"{name}: labels in {folder} go beyond the {n} classes; the files are not {name}")
    return ImageDataset.from_tensors(name, train_x, train_y, test_x, test_y, CLASSES[name])


@register_dataset(
    DatasetInfo(
        "mnist",
        "MNIST handwritten digits, 28x28 grey, 10 classes, 60k/10k (IDX files)",
        downloadable=True,
        present=lambda folder: idx_folder(folder, "mnist") is not None,
    )
)
def load_mnist(data_dir: Path | None, download: bool, image_size: int | None) -> ImageDataset:
    """MNIST from the four IDX files in data_dir (or the download cache)."""
    return _load("mnist", data_dir, download)


@register_dataset(
    DatasetInfo(
        "fashion-mnist",
        "Fashion-MNIST clothing, 28x28 grey, 10 classes, 60k/10k (IDX files)",
        downloadable=True,
        present=lambda folder: idx_folder(folder, "fashion-mnist") is not None,
        default_dirs=lambda: [DEBIAN_FASHION_DIR],
    )
)
def load_fashion_mnist(data_dir: Path | None, download: bool, image_size: int | None) -> ImageDataset:
    """Fashion-MNIST from the IDX files in data_dir, /usr/share/datasets/fashion-mnist or the cache."""
    return _load("fashion-mnist", data_dir, download)
