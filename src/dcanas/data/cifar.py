"""CIFAR-10 and CIFAR-100: the official python-pickle batches, a folder of them or their .tar.gz."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError
from .dataset import DatasetInfo, ImageDataset, corrupt_file, obtain, register_dataset
from .download import Remote, download, extract_tar

# Official archives and their published MD5s (the same constants torchvision checks). Tests patch these.
DOWNLOADS: dict[str, Remote] = {
    "cifar10": Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": Remote("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and labels."""

    title: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the loader reads."""
        return (*self.train, self.test, self.meta)


LAYOUTS = {
    "cifar10": CifarLayout(
        "CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch", "batches.meta", "labels", "label_names",
    ),
    "cifar100": CifarLayout(
        "CIFAR-100", "cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"
    ),
}


def batch_dir(folder: Path, layout: CifarLayout) -> Path | None:
    """`folder` or `folder/<standard folder name>`, whichever holds every batch file."""
    for candidate in (folder, folder / layout.folder):
        if all((candidate / f).is_file() for f in layout.files):
            return candidate
    return None


def archive_path(folder: Path, name: str) -> Path:
    """Where the official archive of `name` sits (or will be downloaded to) in `folder`."""
    return folder / DOWNLOADS[name].filename


# The dtypes a CIFAR batch can hold (images uint8, labels integers), by numpy's pickled names.
_DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "b1"}
_MAX_ELEMENTS = 1 << 31  # far above any CIFAR batch (10,000 x 3,072), far below what would exhaust memory


class _PickledDtype:
    """Stands in for numpy.dtype while unpickling: numpy never sees the file's bytes unchecked."""

    def __init__(self, name: Any = None, align: Any = False, copy: Any = True):
        name = name.decode("latin1") if isinstance(name, bytes) else name
        if name not in _DTYPES:
            raise pickle.UnpicklingError(f"dtype {name!r} does not belong in a CIFAR batch")
        self.name, self.byteorder = name, "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "=", b"<", b">", b"|", b"="):
            self.byteorder = state[1].decode() if isinstance(state[1], bytes) else state[1]

    def to_numpy(self) -> np.dtype:
        dtype = np.dtype(self.name)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" else dtype


class _PickledArray:
    """Stands in for a pickled ndarray: its shape, dtype and byte count are checked before numpy reads them."""

    def __init__(self, *args: Any):
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed array state")
        shape, dtype, fortran, raw = state[-4:]
        if not (isinstance(shape, tuple) and all(type(n) is int and 0 <= n <= _MAX_ELEMENTS for n in shape)
                and isinstance(dtype, _PickledDtype) and isinstance(raw, (bytes, bytearray, str))):
            raise pickle.UnpicklingError("malformed array state")
        raw = raw.encode("latin1") if isinstance(raw, str) else bytes(raw)
        count = int(np.prod(shape, dtype=np.float64))
        numpy_dtype = dtype.to_numpy()
        if count > _MAX_ELEMENTS or len(raw) != count * numpy_dtype.itemsize:
            raise pickle.UnpicklingError(f"array of shape {shape} does not match its {len(raw)} bytes")
        flat = np.frombuffer(raw, dtype=numpy_dtype).copy()
        self.array = flat.reshape(shape, order="F" if fortran else "C")


def _pickled_frombuffer(raw: Any, dtype: Any, shape: Any, order: Any = "C") -> _PickledArray:
    """numpy's protocol-5 form, _frombuffer(bytes, dtype, shape, order), checked like the others."""
    array = _PickledArray()
    array.__setstate__((shape, dtype, order == "F", raw))
    return array


def _pickled_scalar(dtype: Any, raw: Any = b"") -> Any:
    """numpy's scalar(dtype, bytes), checked the same way."""
    if not isinstance(dtype, _PickledDtype) or not isinstance(raw, (bytes, str)):
        raise pickle.UnpicklingError("malformed scalar")
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    numpy_dtype = dtype.to_numpy()
    if len(raw) != numpy_dtype.itemsize:
        raise pickle.UnpicklingError("malformed scalar")
    return np.frombuffer(raw, dtype=numpy_dtype)[0].item()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and arrays only: a batch file cannot run code, and numpy only ever
    copies checked bytes (a damaged file handed to numpy's own reconstruction can crash the interpreter)."""

    _STANDINS = {"_reconstruct": _PickledArray, "ndarray": _PickledArray, "dtype": _PickledDtype,
                 "scalar": _pickled_scalar, "_frombuffer": _pickled_frombuffer}

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "numpy" and name in self._STANDINS:
            return self._STANDINS[name]
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 stores bytes; harmless
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _plain(value: Any) -> Any:
    """Stand-ins replaced by what they stand for."""
    if isinstance(value, _PickledArray):
        if value.array is None:
            raise DatasetError("an array in the batch has no data")
        return value.array
    return value


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            content = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a damaged pickle fails in many ways (even MemoryError); all one fault
        raise corrupt_file(path, e) from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path} is not a CIFAR batch (no dictionary inside); replace it")
    # Batches pickled under Python 2 have bytes keys; ones written by Python 3 have str keys.
    try:
        return {k.decode() if isinstance(k, bytes) else k: _plain(v) for k, v in content.items()}
    except (UnicodeDecodeError, DatasetError) as e:
        raise corrupt_file(path, e) from None


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except KeyError as e:
        raise DatasetError(f"{path} is not a CIFAR batch (no {e.args[0]!r} entry); replace it") from None
    except (ValueError, TypeError, OverflowError) as e:
        raise DatasetError(f"{path} holds images or labels of the wrong type ({e}); replace it") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetError(f"{path} holds data of shape {data.shape} and {len(labels)} labels; expected N×3072 and N")
    return data.reshape(-1, 3, 32, 32), labels


def _load(name: str, data_dir: Path | None, download_missing: bool) -> ImageDataset:
    layout = LAYOUTS[name]
    what = (
        f"{layout.title} batches (expected {layout.folder}/{', '.join(layout.files)} "
        f"or {DOWNLOADS[name].filename})"
    )

    def fetch(target: Path) -> None:
        download(DOWNLOADS[name], target, name)

    root = obtain(name, data_dir, download_missing, what, fetch)
    folder = batch_dir(root, layout)
    if folder is None:  # only the archive is there: extract it once, next to itself
        extract_tar(archive_path(root, name), root, name)
        folder = batch_dir(root, layout)
        if folder is None:
            raise DatasetError(f"{name}: {archive_path(root, name)} holds no {what}; delete it and download it again")
    parts = [_read_batch(folder / f, layout.label_key) for f in layout.train]
    test_x, test_y = _read_batch(folder / layout.test, layout.label_key)
    names = _unpickle(folder / layout.meta).get(layout.names_key, [])
    try:
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
    except (TypeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{name}: {folder / layout.meta} holds unreadable class names ({e}); replace it") from None
    labels = np.concatenate([y for _, y in parts] + [test_y])
    if not classes or (labels.size and (labels.min() < 0 or labels.max() >= len(classes))):
        raise DatasetError(f"{name}: {folder / layout.meta} does not name the classes of the labels; replace it")
    return ImageDataset.from_tensors(
        name,
        torch.from_numpy(np.concatenate([x for x, _ in parts])),
        torch.from_numpy(np.concatenate([y for _, y in parts])),
        torch.from_numpy(test_x.copy()),
        torch.from_numpy(test_y),
        classes,
    )


def _info(name: str, description: str) -> DatasetInfo:
    return DatasetInfo(
        name,
        description,
        downloadable=True,
        flip=True,
        present=lambda folder: batch_dir(folder, LAYOUTS[name]) is not None or archive_path(folder, name).is_file(),
    )


@register_dataset(_info("cifar10", "CIFAR-10, 32x32 colour, 10 classes, 50k/10k (python batches or .tar.gz)"))
def load_cifar10(data_dir: Path | None, download: bool, image_size: int | None) -> ImageDataset:
    """CIFAR-10 from cifar-10-batches-py (at or in data_dir) or the official .tar.gz."""
    return _load("cifar10", data_dir, download)


@register_dataset(_info("cifar100", "CIFAR-100, 32x32 colour, 100 fine classes, 50k/10k (python batches or .tar.gz)"))
def load_cifar100(data_dir: Path | None, download: bool, image_size: int | None) -> ImageDataset:
    """CIFAR-100 (fine labels) from cifar-100-python (at or in data_dir) or the official .tar.gz."""
    return _load("cifar100", data_dir, download)
