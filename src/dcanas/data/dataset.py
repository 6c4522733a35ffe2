"""The in-memory dataset type, the dataset registry and the one entry point, `load_dataset`."""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DatasetError
from ..registry import Registry

Loader = Callable[..., "ImageDataset"]

# name -> loader(data_dir: Path | None, download: bool, image_size: int | None, **options)
DATASETS: Registry[Loader] = Registry("dataset", DatasetError)


@dataclass
class ImageDataset:
    """Train and test images as uint8 N×C×H×W tensors, int64 labels, class names and stats."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_tensors(
        cls,
        name: str,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        classes: list[str],
    ) -> ImageDataset:
        """Build a dataset, computing the per-channel mean and std of the training images."""
        if train_x.dtype != torch.uint8 or train_x.ndim != 4 or test_x.shape[1:] != train_x.shape[1:]:
            raise DatasetError(
                f"{name}: images must be uint8 N×C×H×W with equal train/test shapes, got "
                f"{train_x.dtype} {tuple(train_x.shape)} and {tuple(test_x.shape)}"
            )
        if len(train_x) != len(train_y) or len(test_x) != len(test_y):
            raise DatasetError(f"{name}: image and label counts differ")
        mean, std = channel_stats(train_x)
        return cls(name, train_x, train_y.long(), test_x, test_y.long(), list(classes), mean, std)

    @property
    def in_channels(self) -> int:
        """Number of image channels (1 or 3)."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Image height in pixels (images are square unless a loader says otherwise)."""
        return int(self.train_x.shape[2])

    @property
    def image_numel(self) -> int:
        """Values per image (C x H x W)."""
        return int(self.train_x[0].numel())

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in 0..1 units."""
    if len(x) == 0:
        raise DatasetError("cannot compute channel statistics of an empty training set")
    # From each channel's 256-bin histogram: exact, and several times faster than float sums.
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        mean = (counts * values).sum() / counts.sum()
        var = (counts * values.square()).sum() / counts.sum() - mean.square()
        means.append(mean.item())
        stds.append(max(var.clamp_min(0).sqrt().item(), 1e-6))  # a constant channel must not divide by 0
    return tuple(means), tuple(stds)


def resize_images(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 N×C×H×W images to size×size (bilinear, antialiased)."""
    out = torch.empty((len(x), x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def corrupt_file(path: Path, reason: object) -> DatasetError:
    """The error for a dataset file that cannot be read."""
    return DatasetError(f"cannot read {path} ({reason}); the file is corrupt: delete it and fetch it again")


def default_data_dir(name: str) -> Path:
    """Where `--download` puts a dataset when no --data-dir is given: ~/.cache/dcanas/<name>.

    ~/.cache is $XDG_CACHE_HOME when that is set.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "dcanas" / name


@dataclass(frozen=True)
class DatasetInfo:
    """What `dcanas datasets` shows about a registered dataset, and where its files are looked for."""

    name: str
    description: str
    downloadable: bool = False
    # present(folder) says whether the dataset's files are in `folder`; None: built in, always there.
    present: Callable[[Path], bool] | None = None
    # Folders searched when no --data-dir is given, before the download cache.
    default_dirs: Callable[[], list[Path]] = lambda: []
    # Shown as the location of a dataset that has no default folder (e.g. imagefolder).
    hint: str = ""
    # Everything else dataset-specific lives here too, so a new dataset is added in one place:
    flip: bool = False  # horizontal flips in augmentation (natural images; not digits or clothing)
    search_preset: dict[str, Any] = field(default_factory=dict)  # SearchConfig values over the defaults
    train_preset: dict[str, Any] = field(default_factory=dict)  # TrainConfig values over the recipe
    default_budget: dict[str, float] = field(default_factory=dict)  # a search's budget when none is given

    def search_dirs(self) -> list[Path]:
        """Folders searched when no --data-dir is given."""
        return [*self.default_dirs(), *([default_data_dir(self.name)] if self.downloadable else [])]


DATASET_INFO: dict[str, DatasetInfo] = {}


def dataset_info(name: str) -> DatasetInfo:
    """The registered DatasetInfo of `name` (any case); a bare one for names no loader registered."""
    return DATASET_INFO.get(name.lower()) or DatasetInfo(name.lower(), "")


def register_dataset(info: DatasetInfo) -> Callable[[Loader], Loader]:
    """Decorator: register a loader in DATASETS and its description for `dataset_table`."""

    def add(loader: Loader) -> Loader:
        DATASETS.add(info.name, loader)
        DATASET_INFO[info.name] = info
        return loader

    return add


DATA_MODES = ("auto", "memory", "stream")


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    image_size: int | None = None,
    data_mode: str = "memory",
    strict: bool = False,
    **options: object,
) -> Any:
    """Load a registered dataset by name; `image_size` resizes to image_size×image_size.

    Returns an ImageDataset, or with `data_mode` "stream" (or "auto", for a set too big to decode into
    memory) a `stream.StreamedDataset` where the dataset's loader can stream (imagefolder).
    """
    loader = DATASETS.get(name)
    accepted = [
        p.name for p in inspect.signature(loader).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    if data_mode not in DATA_MODES:
        raise ConfigError(f"--data-mode must be one of {', '.join(DATA_MODES)}, not {data_mode!r}")
    if "data_mode" in accepted:
        options.update(data_mode=data_mode, strict=strict)
    elif data_mode == "stream":
        streams = [n for n in DATASETS.names() if "data_mode" in inspect.signature(DATASETS.get(n)).parameters]
        raise ConfigError(f"--data-mode stream reads image files as batches need them, which {name} cannot; it "
                          f"works for {', '.join(streams)} (use --data-mode memory or auto)")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        valid = ", ".join(accepted) if accepted else "none"
        raise ConfigError(f"{name}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image size must be a positive number of pixels, got {image_size}")
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    data = loader(folder, download, image_size, **options)
    # Loaders that decode files resize while decoding; the rest are resized here, in one place.
    if isinstance(data, ImageDataset) and image_size is not None and data.train_x.shape[2:] != (image_size,
                                                                                                 image_size):
        data = ImageDataset.from_tensors(
            data.name,
            resize_images(data.train_x, image_size),
            data.train_y,
            resize_images(data.test_x, image_size),
            data.test_y,
            data.classes,
        )
    return data


def locate(name: str, data_dir: Path | None) -> tuple[Path | None, list[Path]]:
    """The first folder holding `name`'s files (None if none does) and the folders searched.

    An explicit data_dir is the only candidate; otherwise the dataset's default folders and its
    download cache are searched in that order.
    """
    info = DATASET_INFO[name]
    candidates = [data_dir] if data_dir is not None else info.search_dirs()
    assert info.present is not None, f"{name} is built in and has no files to locate"
    found = next((folder for folder in candidates if info.present(folder)), None)
    return found, candidates


def dataset_table() -> list[dict[str, object]]:
    """One row per registered dataset for `dcanas datasets`: availability, location, download."""
    rows: list[dict[str, object]] = []
    for name in DATASETS.names():
        info = DATASET_INFO[name]
        if info.present is None:
            available, location = True, "built-in"
        else:
            found, searched = locate(name, None)
            available = found is not None
            location = str(found) if found else " or ".join(map(str, searched)) or info.hint
        if available:
            status = "available"
        elif info.downloadable:
            status = "needs --data-dir or --download"
        else:
            status = "needs --data-dir"
        rows.append(
            {
                "name": name,
                "description": info.description,
                "available": available,
                "status": status,
                "location": location,
                "download": info.downloadable,
            }
        )
    return rows


def obtain(name: str, data_dir: Path | None, download: bool, what: str, fetch: Callable[[Path], None]) -> Path:
    """The folder holding `name`'s files: found where they are looked for, or fetched there.

    `what` says what is missing, e.g. "CIFAR-10 batches (expected cifar-10-batches-py/...)";
    `fetch(folder)` downloads the files into `folder`.
    """
    found, searched = locate(name, data_dir)
    if found is not None:
        return found
    downloadable = DATASET_INFO[name].downloadable
    if not (download and downloadable):
        where = " or ".join(map(str, searched))
        todo = "pass --data-dir pointing at them" + (" or add --download" if downloadable else "")
        raise DatasetError(f"{name}: no {what} in {where}; {todo}")
    target = data_dir if data_dir is not None else default_data_dir(name)
    fetch(target)
    if not DATASET_INFO[name].present(target):  # type: ignore[misc]
        raise DatasetError(f"{name}: downloaded into {target} but still found no {what}; delete {target} and retry")
    return target
