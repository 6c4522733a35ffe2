"""ImageFolder layout (train/<class>/*, test/<class>/* or val/<class>/*) from a folder or a tar archive.

Archives are read member by member without extracting; images are decoded with Pillow, in a
process pool once there are more than PARALLEL_THRESHOLD of them (decoding small JPEGs is
CPU-bound Python work, so threads do not help).
"""
from __future__ import annotations

import io
import itertools
import os
import tarfile
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..errors import DatasetError
from .dataset import DatasetInfo, ImageDataset, register_dataset
from .stream import (EncodedImages, StreamedDataset, decoding_context, decoding_workers, is_compressed_tar, pack_blobs,
                     sample_stats, tar_members)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SPLITS = ("train", "test", "val")  # val/ is the test split when test/ is absent
GREY_MODES = {"1", "L", "LA"}
PARALLEL_THRESHOLD = 2000
CHUNK_SIZE = 1000
_LAYOUT = "train/<class>/<image> and test/<class>/<image> (or val/<class>/<image>)"


@dataclass(frozen=True, order=True)
class _Entry:
    """One image file: its split, class folder and name (sorting these fixes the order)."""

    split: str
    label: str
    name: str


def _entry(parts: tuple[str, ...]) -> tuple[tuple[str, ...], _Entry] | None:
    """(prefix, entry) for a path `prefix/<split>/<class>/<file>`, or None if it is not an image."""
    parts = tuple(p for p in parts if p not in ("", "."))
    if len(parts) < 3 or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    split, label, name = parts[-3:]
    if split not in SPLITS or PurePosixPath(name).suffix.lower() not in IMAGE_EXTENSIONS:
        return None
    return parts[:-3], _Entry(split, label, name)


def _folder_images(root: Path) -> Iterator[tuple[tuple[str, ...], _Entry, Path]]:
    for path in sorted(root.rglob("*")):
        found = _entry(path.relative_to(root).parts)
        if found is not None and path.is_file():
            yield found[0], found[1], path


def _scan_folder(root: Path) -> Iterator[tuple[tuple[str, ...], _Entry, bytes]]:
    for prefix, entry, path in _folder_images(root):
        yield prefix, entry, path.read_bytes()


def _scan_archive(archive: Path) -> Iterator[tuple[tuple[str, ...], _Entry, bytes]]:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:  # sequential: a .tar.gz cannot seek
                found = _entry(PurePosixPath(member.name).parts) if member.isfile() else None
                if found is not None:
                    yield found[0], found[1], tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"imagefolder: cannot read {archive} ({e}); the archive is corrupt") from None


def _decode(items: list[tuple[str, bytes]], size: int | None) -> list[np.ndarray]:
    """Decode images to H×W (greyscale) or H×W×3 uint8 arrays, resized to size×size if given."""
    out = []
    for name, blob in items:
        try:
            with Image.open(io.BytesIO(blob)) as image:
                if image.mode not in ("L", "RGB"):  # converting to the same mode would only copy
                    image = image.convert("L" if image.mode in GREY_MODES else "RGB")
                if size is not None:
                    image = image.resize((size, size), Image.Resampling.BILINEAR)
                out.append(np.asarray(image))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DatasetError(f"imagefolder: cannot decode {name} ({e}); remove or replace it") from None
    return out


def _chunks(items: Iterable[tuple[str, bytes]], size: int) -> Iterator[list[tuple[str, bytes]]]:
    chunk: list[tuple[str, bytes]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def decode_all(items: Iterable[tuple[str, bytes]], size: int | None) -> list[np.ndarray]:
    """Decode a stream of images in order, in worker processes once the stream is long."""
    chunks = _chunks(items, CHUNK_SIZE)
    head: list[list[tuple[str, bytes]]] = []
    for chunk in chunks:  # decode small datasets in-process: starting workers costs more
        head.append(chunk)
        if sum(map(len, head)) > PARALLEL_THRESHOLD:
            break
    else:
        return [a for chunk in head for a in _decode(chunk, size)]
    futures: list[Future[list[np.ndarray]]] = []
    with ProcessPoolExecutor(decoding_workers(16), mp_context=decoding_context()) as pool, tqdm(
        desc="decoding images", unit="img", leave=False, disable=None
    ) as bar:
        try:
            for chunk in itertools.chain(head, chunks):  # reading goes on while workers decode
                future = pool.submit(_decode, chunk, size)
                future.add_done_callback(lambda f, n=len(chunk): bar.update(n))
                futures.append(future)
            return [a for future in futures for a in future.result()]
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # a bad image or Ctrl-C: don't decode the rest
            raise


def _source(data_dir: Path | None) -> Iterator[tuple[tuple[str, ...], _Entry, bytes]]:
    if data_dir is None:
        raise DatasetError(f"imagefolder: pass --data-dir pointing at a folder or .tar/.tar.gz with {_LAYOUT}")
    if data_dir.is_dir():
        return _scan_folder(data_dir)
    if data_dir.is_file() and data_dir.name.lower().endswith(ARCHIVE_SUFFIXES):
        return _scan_archive(data_dir)
    raise DatasetError(
        f"imagefolder: {data_dir} is neither a folder nor a .tar/.tar.gz/.tgz archive; expected {_LAYOUT}"
    )


def stack_images(arrays: list[np.ndarray], names: list[str], where: Path) -> torch.Tensor:
    """N×C×H×W uint8: one channel if every image is greyscale, else RGB with grey ones repeated."""
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape[:2]
        odd = next(i for i, a in enumerate(arrays) if a.shape[:2] != first)
        raise DatasetError(
            f"imagefolder: images in {where} differ in size ({names[0]} is {first[1]}x{first[0]}, "
            f"{names[odd]} is {arrays[odd].shape[1]}x{arrays[odd].shape[0]}); pass --image-size N "
            "to resize all to NxN"
        )
    if all(a.ndim == 2 for a in arrays):
        return torch.from_numpy(np.stack(arrays)[:, None])
    rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return torch.from_numpy(np.ascontiguousarray(np.stack(rgb).transpose(0, 3, 1, 2)))


@dataclass
class _Index:
    """Every image file of a folder or tar in listing order: its entry, its root prefix and where its bytes are."""

    prefixes: set[tuple[str, ...]]
    entries: list[_Entry]
    images: EncodedImages


def _index(data_dir: Path | None) -> _Index:
    """List a folder's or archive's images without decoding them (a compressed tar's bytes are kept, packed)."""
    _source(data_dir)  # refuses a missing or unusable --data-dir
    assert data_dir is not None
    prefixes, entries, names = set(), [], []
    if data_dir.is_dir():
        sizes = []
        for prefix, entry, path in _folder_images(data_dir):
            prefixes.add(prefix)
            entries.append(entry)
            names.append(str(path.relative_to(data_dir)))
            sizes.append(path.stat().st_size)
        images = EncodedImages(names, root=str(data_dir), sizes=np.asarray(sizes, dtype=np.int64))
    elif is_compressed_tar(data_dir):
        blobs = []
        for prefix, entry, blob in _scan_archive(data_dir):
            prefixes.add(prefix)
            entries.append(entry)
            names.append("/".join((*prefix, entry.split, entry.label, entry.name)))
            blobs.append(blob)
        buffer, offsets, sizes_array = pack_blobs(blobs)
        images = EncodedImages(names, buffer=buffer, offsets=offsets, sizes=sizes_array)
    else:
        offsets, sizes = [], []
        for name, offset, size in tar_members(data_dir):
            found = _entry(PurePosixPath(name).parts)
            if found is not None:
                prefixes.add(found[0])
                entries.append(found[1])
                names.append(name)
                offsets.append(offset)
                sizes.append(size)
        images = EncodedImages(names, tar=str(data_dir), offsets=np.asarray(offsets, dtype=np.int64),
                               sizes=np.asarray(sizes, dtype=np.int64))
    return _Index(prefixes, entries, images)


def memory_limit() -> int:
    """The decoded size (bytes) above which `data_mode="auto"` streams: a quarter of RAM, at most 4 GiB."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 * 2**30
    return min(4 * 2**30, ram // 4)


def _probe(images: EncodedImages, image_size: int | None, where: Path | None, count: int = 200) -> tuple[int, int]:
    """(channels, size) for streaming: 1 channel if every probed image is greyscale; the common square size of
    the probed images unless `image_size` is given (their headers only, evenly spaced over the set)."""
    modes, shapes = set(), {}
    unreadable: tuple[str, Exception] | None = None
    for i in np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(np.int64)):
        try:
            with Image.open(io.BytesIO(images.read(int(i)))) as image:
                modes.add(image.mode)
                shapes.setdefault(image.size, images.names[int(i)])
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            unreadable = unreadable or (images.names[int(i)], exc)
            continue  # an unreadable image is reported when a batch reaches it
    channels = 1 if modes and modes <= GREY_MODES else 3
    if image_size is not None:
        return channels, image_size
    if not shapes and unreadable is not None:  # no size to read off: say which image, as decoding it would
        name, exc = unreadable
        raise DatasetError(f"imagefolder: cannot decode {name} ({exc}); remove or replace it")
    if len(shapes) == 1 and next(iter(shapes))[0] == next(iter(shapes))[1]:
        return channels, next(iter(shapes))[0]
    (a, name_a), (b, name_b) = (list(shapes.items()) + [((0, 0), "?")])[:2]
    raise DatasetError(f"imagefolder: images in {where} differ in size or are not square ({name_a} is {a[0]}x{a[1]}, "
                       f"{name_b} is {b[0]}x{b[1]}); pass --image-size N to resize all to NxN")


def _streamed(index: _Index, data_dir: Path | None, image_size: int | None, strict: bool) -> StreamedDataset:
    """The StreamedDataset of an index: zero-byte files left out (or refused when strict), nothing decoded but
    a sample for the channel statistics."""
    sizes = index.images.sizes
    assert sizes is not None
    empty = [index.images.names[i] for i in np.flatnonzero(sizes == 0)]
    if empty and strict:
        raise DatasetError(f"imagefolder: {empty[0]} is empty (0 bytes); remove it, or drop --strict to skip "
                           "unreadable images")
    keep = np.flatnonzero(sizes > 0).tolist()
    entries = [index.entries[i] for i in keep]
    order, classes, test_split = _layout(index.prefixes, entries, data_dir)
    label = {c: i for i, c in enumerate(classes)}
    parts = {}
    for split in ("train", test_split):
        ids = [i for i in order if entries[i].split == split]
        parts[split] = (index.images.subset([keep[i] for i in ids]),
                        torch.tensor([label[entries[i].label] for i in ids], dtype=torch.int64))
    train, train_y = parts["train"]
    test, test_y = parts[test_split]
    channels, size = _probe(train, image_size, data_dir)
    mean, std = sample_stats(train, size, channels)
    return StreamedDataset("imagefolder", train, train_y, test, test_y, classes, mean, std, channels, size, empty)


@register_dataset(
    DatasetInfo(
        "imagefolder",
        "your images: train/<class>/*, test/<class>/* (or val/) in a folder or .tar/.tar.gz",
        present=lambda folder: False,
        hint="--data-dir (folder or .tar/.tar.gz)",
        flip=True,  # natural images, as the photos users bring usually are
    )
)
def load_imagefolder(data_dir: Path | None, download: bool, image_size: int | None, *, data_mode: str = "memory",
                     strict: bool = False) -> ImageDataset | StreamedDataset:
    """Images in the ImageFolder layout; classes are the sorted train/ subfolder names.

    data_mode: "memory" decodes every image now; "stream" keeps them encoded until a batch needs them
    (`stream.py`); "auto" streams when the decoded set would exceed `memory_limit()`. `strict` refuses
    unreadable images in a streamed set instead of skipping them.
    """
    if data_mode == "memory":
        prefixes: set[tuple[str, ...]] = set()
        entries: list[_Entry] = []

        def items() -> Iterator[tuple[str, bytes]]:
            for prefix, entry, blob in _source(data_dir):
                prefixes.add(prefix)
                entries.append(entry)
                yield "/".join((*prefix, entry.split, entry.label, entry.name)), blob

        return _decoded(decode_all(items(), image_size), prefixes, entries, data_dir)
    index = _index(data_dir)
    if data_mode == "auto" and len(index.entries):
        _, size = _probe(index.images, image_size, data_dir, count=1)
        if 3 * size * size * len(index.entries) <= memory_limit():
            items = ((index.images.names[i], index.images.read(i)) for i in range(len(index.entries)))
            return _decoded(decode_all(items, image_size), index.prefixes, index.entries, data_dir)
    return _streamed(index, data_dir, image_size, strict)


def _decoded(arrays: list[np.ndarray], prefixes: set[tuple[str, ...]], entries: list[_Entry],
             data_dir: Path | None) -> ImageDataset:
    """The in-memory dataset of decoded images (in listing order) and their entries."""
    order, classes, _ = _layout(prefixes, entries, data_dir)
    x = stack_images([arrays[i] for i in order], [entries[i].name for i in order], data_dir)  # type: ignore[arg-type]
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[entries[i].label] for i in order], dtype=torch.int64)
    is_train = torch.tensor([entries[i].split == "train" for i in order])
    return ImageDataset.from_tensors("imagefolder", x[is_train], y[is_train], x[~is_train], y[~is_train], classes)


def _layout(prefixes: set[tuple[str, ...]], entries: list[_Entry], data_dir: Path | None
            ) -> tuple[list[int], list[str], str]:
    """(the entries to use in a stable order, the classes, the test split's name); or refuse a bad layout."""
    if len(prefixes) > 1:
        roots = ", ".join(sorted("/".join(p) or "." for p in prefixes))
        raise DatasetError(f"imagefolder: {data_dir} holds several dataset roots ({roots}); point --data-dir at one")
    splits = {e.split for e in entries}
    test_split = "test" if "test" in splits else "val"
    if "train" not in splits or test_split not in splits:
        raise DatasetError(f"imagefolder: no images in the layout {_LAYOUT} found in {data_dir}")
    # A stable order (split, class, file name) whatever order the folder or archive lists them in.
    order = sorted((i for i, e in enumerate(entries) if e.split in ("train", test_split)), key=entries.__getitem__)
    classes = sorted({e.label for e in entries if e.split == "train"})
    unknown = sorted({e.label for e in entries if e.split == test_split} - set(classes))
    if unknown:
        raise DatasetError(f"imagefolder: {test_split}/ has classes that train/ lacks: {', '.join(unknown)}")
    return order, classes, test_split
