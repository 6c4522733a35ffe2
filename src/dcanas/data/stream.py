"""Streamed image folders: images decoded on the fly in DataLoader worker processes, never all in memory.

For sets whose decoded pixels would not fit in memory (ImageNet at 224 px is ~190 GB; the CIFAR-10 JPEG
tarball at 224 px ~9 GB). What stays in memory is each image's label and where its encoded bytes are: a
path in a folder; an offset in an uncompressed tar; or, for a compressed tar (which cannot seek), the
encoded bytes themselves, packed in one buffer (a JPEG is ~1/20 of its decoded pixels at 224 px).

Training images get the ImageNet augmentation (random-resized crop, horizontal flip, colour jitter);
evaluation images are resized and centre-cropped. Every random choice is drawn from a generator keyed by
(seed, epoch, image index), so a resumed run decodes exactly the crops an uninterrupted run would have, and
under torchrun each process decodes only its own rows of every global batch.

A zero-byte, truncated or otherwise undecodable image is reported once by path and replaced by the next
readable image of its split (the same replacement every time, so a resume stays exact); with strict=True
it is refused instead.
"""
from __future__ import annotations

import io
import math
import multiprocessing
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from ..errors import DatasetError
from ..threads import available_cores
from .augment import Augment
from .dataset import ImageDataset, channel_stats
from .loader import BatchLoader, BatchPlan, normaliser

STATS_SAMPLE = 1000  # training images decoded to estimate the channel mean and std
EVAL_CROP_FRACTION = 0.875  # evaluation: resize the shorter side to size / 0.875, keep the centre size x size
CROP_SCALE = (0.08, 1.0)  # random-resized crop: fraction of the image's area, and aspect ratio range
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.4  # brightness, contrast and saturation factors drawn from [1 - 0.4, 1 + 0.4]
_STREAM_CROP = 2  # generator stream id (the loader's permutation and batch augmentation use 0 and 1)
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


@dataclass
class EncodedImages:
    """The encoded bytes of N images: files in a folder, members of an uncompressed tar, or one buffer."""

    names: list[str]  # each image's path, for messages (relative to `root` for a folder)
    root: str | None = None  # a folder: image i is root/names[i]
    tar: str | None = None  # an uncompressed tar: image i is sizes[i] bytes at offsets[i]
    buffer: np.ndarray | None = None  # in memory: image i is buffer[offsets[i]:offsets[i] + sizes[i]]
    offsets: np.ndarray | None = None
    sizes: np.ndarray | None = None  # bytes per image (every kind: a zero-byte file is known before reading)
    _fd: tuple[int, int] | None = field(default=None, repr=False)  # (pid, fd): each worker opens its own

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, ids: list[int]) -> "EncodedImages":
        """The images `ids`, in that order."""
        pick = np.asarray(ids, dtype=np.int64)
        return EncodedImages([self.names[i] for i in ids], self.root, self.tar, self.buffer,
                             None if self.offsets is None else self.offsets[pick],
                             None if self.sizes is None else self.sizes[pick])

    def read(self, i: int) -> bytes:
        """Image i's encoded bytes."""
        if self.buffer is not None:
            start = int(self.offsets[i])  # type: ignore[index]
            return self.buffer[start : start + int(self.sizes[i])].tobytes()  # type: ignore[index]
        if self.tar is not None:
            if self._fd is None or self._fd[0] != os.getpid():  # a forked worker must not share the parent's
                self._fd = (os.getpid(), os.open(self.tar, os.O_RDONLY))
            return os.pread(self._fd[1], int(self.sizes[i]), int(self.offsets[i]))  # type: ignore[index]
        return (Path(self.root) / self.names[i]).read_bytes()  # type: ignore[arg-type]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}


def pack_blobs(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(buffer, offsets, sizes): many byte strings in one array (no per-image Python objects for workers
    to touch, so forked workers share the pages instead of copying them)."""
    sizes = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
    offsets = np.zeros(len(blobs), dtype=np.int64)
    np.cumsum(sizes[:-1], out=offsets[1:])
    buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8) if blobs else np.zeros(0, np.uint8)
    return buffer, offsets, sizes


def is_compressed_tar(path: Path) -> bool:
    """Whether a tar archive is compressed (and so cannot be read at offsets)."""
    with open(path, "rb") as f:
        head = f.read(6)
    return head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head == b"\xfd7zXZ\x00"


def tar_members(archive: Path) -> Iterator[tuple[str, int, int]]:
    """(name, data offset, size) of each regular file of an uncompressed tar, without reading the data."""
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name, member.offset_data, member.size
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"imagefolder: cannot read {archive} ({e}); the archive is corrupt") from None


# -- decoding and augmentation, per image (runs in the workers) --------------------------------------------------

def _open(blob: bytes, channels: int) -> Image.Image:
    image = Image.open(io.BytesIO(blob))
    image.load()  # a truncated file fails here, not later
    mode = "L" if channels == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)


def random_resized_box(width: int, height: int, rng: np.random.Generator,
                       scale: tuple[float, float] = CROP_SCALE, ratio: tuple[float, float] = CROP_RATIO
                       ) -> tuple[int, int, int, int]:
    """A crop box (left, top, right, bottom) covering a random fraction `scale` of the image at an aspect
    ratio in `ratio` (10 tries, as Inception's training; then the largest centred box of a valid ratio)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w, h = (width, round(width / aspect)) if width / height < aspect else (round(height * aspect), height)
    w, h = min(w, width), min(h, height)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_box(width: int, height: int, fraction: float = EVAL_CROP_FRACTION) -> tuple[float, float, float, float]:
    """The centred square that remains of an image whose shorter side is scaled to size / fraction and then
    cropped to size x size, in the image's own coordinates."""
    side = min(width, height) * fraction
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def colour_jitter(pixels: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Brightness, contrast and saturation of an H x W (x 3) uint8 image scaled by `factors` (3 values)."""
    x = pixels.astype(np.float32)
    x *= factors[0]
    grey = x if x.ndim == 2 else x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey.mean()) * factors[1] + grey.mean()
    if x.ndim == 3:  # saturation: blend with the image's own greyscale
        grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        x = (x - grey) * factors[2] + grey
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def decode_image(blob: bytes, size: int, channels: int, rng: np.random.Generator | None) -> np.ndarray:
    """H x W (x 3) uint8 pixels of an encoded image: augmented with `rng` for training, centre-cropped without."""
    image = _open(blob, channels)
    if rng is None:
        return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=centre_box(*image.size)))
    box = random_resized_box(*image.size, rng)
    pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return colour_jitter(pixels, rng.uniform(1 - JITTER, 1 + JITTER, size=3))


def crop_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one image's augmentation in one epoch: a function of (seed, epoch, index) only."""
    return np.random.default_rng([seed % 2**63, epoch, index, _STREAM_CROP])


class _Decoder(torch.utils.data.Dataset):
    """Item (epoch, index) -> (C x H x W uint8 pixels, label, paths of unreadable images passed over)."""

    def __init__(self, images: EncodedImages, labels: np.ndarray, size: int, channels: int, augment: bool,
                 seed: int) -> None:
        self.images, self.labels, self.size, self.channels = images, labels, size, channels
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, int, list[str]]:
        epoch, index = key
        rng = crop_generator(self.seed, epoch, index) if self.augment else None
        bad: list[str] = []
        for step in range(len(self.images)):
            j = (index + step) % len(self.images)  # the next readable image stands in, the same one every time
            try:
                pixels = decode_image(self.images.read(j), self.size, self.channels, rng)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                bad.append(self.images.names[j])
                continue
            pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
            return np.ascontiguousarray(pixels), int(self.labels[j]), bad
        raise DatasetError(f"imagefolder: none of the {len(self.images)} images can be decoded")


def _collate(items: list[tuple[np.ndarray, int, list[str]]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    pixels = torch.from_numpy(np.stack([p for p, _, _ in items]))
    return pixels, torch.tensor([label for _, label, _ in items]), [name for *_, bad in items for name in bad]


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers only run Pillow and numpy; torch threads there would fight the step


def decoding_workers(limit: int = 8) -> int:
    """Decoding processes: one per core but the one that runs the step (or collects results), at most `limit`."""
    return min(max(1, available_cores() - 1), limit)


def decoding_context() -> Any:
    """The multiprocessing context of decoding workers: fork where there is one, as a worker only runs Pillow and
    numpy, and spawning would re-import torch in each (seconds)."""
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)


# -- the dataset and its loader ----------------------------------------------------------------------------------

@dataclass
class StreamedDataset:
    """An image-folder dataset whose images stay encoded until a batch needs them (see the module doc)."""

    name: str
    train: EncodedImages
    train_y: torch.Tensor
    test: EncodedImages
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_channels: int
    image_size: int
    skipped: list[str] = field(default_factory=list)  # zero-byte files left out when the folder was read

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_numel(self) -> int:
        """Values per decoded image (C x H x W)."""
        return self.in_channels * self.image_size * self.image_size


def sample_stats(images: EncodedImages, size: int, channels: int, count: int = STATS_SAMPLE
                 ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 units) of `count` evenly spaced images, centre-cropped as evaluation sees them."""
    picks = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(np.int64))
    decoder = _Decoder(images, np.zeros(len(images), np.int64), size, channels, augment=False, seed=0)
    pixels = np.stack([decoder[(0, int(i))][0] for i in picks])
    return channel_stats(torch.from_numpy(pixels))


class StreamLoader(BatchPlan):
    """BatchLoader's interface over a StreamedDataset split: each batch decoded by worker processes.

    `indices` picks the split's images (a subset, or one half of a train/val split); a batch's rows are
    its images in the epoch's permutation of them, exactly as BatchLoader orders in-memory images.
    """

    def __init__(self, data: StreamedDataset, split: str, indices: torch.Tensor | None, batch_size: int, *,
                 augment: bool, shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1, workers: int | None = None,
                 strict: bool = False, report: Callable[[str], None] | None = None) -> None:
        images, labels = (data.train, data.train_y) if split == "train" else (data.test, data.test_y)
        self.indices = torch.arange(len(images)) if indices is None else indices.cpu().long()
        super().__init__(len(self.indices), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                         device=device, rank=rank, world_size=world_size)
        self.decoder = _Decoder(images, labels.numpy(), data.image_size, data.in_channels, augment, seed)
        self.workers = decoding_workers() if workers is None else workers
        self.strict = strict
        self.report = report or (lambda message: None)
        self.reported: set[str] = set()
        self._scale, self._shift = normaliser(data.mean, data.std, self.device)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (x, y) batches of `epoch`, starting at global batch `start_batch`."""
        shards = []
        for _, batch in self.global_batches(epoch, start_batch):
            start, stop = self._shard(len(batch))
            shards.append([(epoch, int(i)) for i in self.indices[batch[start:stop].cpu()]])
        if not shards:
            return
        loader = torch.utils.data.DataLoader(
            self.decoder, batch_sampler=shards, num_workers=self.workers, collate_fn=_collate,
            multiprocessing_context=decoding_context() if self.workers else None,
            worker_init_fn=_one_thread if self.workers else None, prefetch_factor=4 if self.workers else None)
        for pixels, labels, bad in loader:
            self._passed_over(bad)
            x = pixels.to(self.device, non_blocking=True).float().mul_(self._scale).sub_(self._shift)
            yield x, labels.to(self.device)

    def _passed_over(self, names: list[str]) -> None:
        """Report each unreadable image once (or refuse it, when strict)."""
        for name in names:
            if self.strict:
                raise DatasetError(f"imagefolder: cannot decode {name}; remove or replace it (or drop --strict to "
                                   "skip unreadable images)")
            if name not in self.reported:
                self.reported.add(name)
                self.report(f"skipping an unreadable image: {name} (another image of its split stands in)")


def make_loader(data: ImageDataset | StreamedDataset, split: str, indices: torch.Tensor | None, batch_size: int, *,
                augment: Augment | None, seed: int, shuffle: bool = True, drop_last: bool = False,
                device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1, workers: int | None = None,
                strict: bool = False, report: Callable[[str], None] | None = None) -> BatchPlan:
    """The batches of `data`'s images `indices` of `split` ("train" or "test"; None: all of them).

    An in-memory ImageDataset gives a BatchLoader, augmented by `augment` (an `Augment`, or None); a
    StreamedDataset gives a StreamLoader, with the ImageNet augmentation whenever `augment` is not None (which
    replaces the in-memory pad-and-crop; cutout is not applied to streamed images).
    """
    if isinstance(data, StreamedDataset):
        return StreamLoader(data, split, indices, batch_size, augment=augment is not None, shuffle=shuffle,
                            drop_last=drop_last, seed=seed, device=device, rank=rank, world_size=world_size,
                            workers=workers, strict=strict, report=report)
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    if indices is not None:
        x, y = x[indices], y[indices]
    return BatchLoader(x, y, batch_size, mean=data.mean, std=data.std, shuffle=shuffle, augment=augment,
                       drop_last=drop_last, seed=seed, device=device, rank=rank, world_size=world_size)
