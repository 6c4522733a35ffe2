"""TinyImageNet-200 in its own layout, from the folder or the official .zip (read without extracting).

    tiny-imagenet-200/wnids.txt                          the 200 class ids (WordNet ids)
    tiny-imagenet-200/words.txt                          id -> readable name (optional here)
    tiny-imagenet-200/train/<wnid>/images/<file>.JPEG    500 per class
    tiny-imagenet-200/val/images/<file>.JPEG             50 per class, labelled by
    tiny-imagenet-200/val/val_annotations.txt            <file> <tab> <wnid> <tab> box...

The labelled val/ split is the test split (test/ has no labels). Images are 64x64; the few greyscale
ones become RGB. Decoding shares imagefolder's (Pillow, worker processes for large sets).
"""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import torch

from ..errors import DatasetError
from .dataset import DatasetInfo, ImageDataset, register_dataset
from .imagefolder import IMAGE_EXTENSIONS, decode_all, stack_images

ROOT_NAME = "tiny-imagenet-200"
_LAYOUT = ("wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt "
           f"(the {ROOT_NAME} folder or its .zip)")


class _Files:
    """The dataset's files by relative path, from a folder or a zip archive."""

    def __init__(self, data_dir: Path):
        self.zip: zipfile.ZipFile | None = None
        if data_dir.is_file() and zipfile.is_zipfile(data_dir):
            self.zip = zipfile.ZipFile(data_dir)
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
            roots = {PurePosixPath(n).parent for n in names if PurePosixPath(n).name == "wnids.txt"}
            if len(roots) != 1:
                raise DatasetError(f"tinyimagenet: {data_dir} holds {len(roots)} wnids.txt files; expected {_LAYOUT}")
            root = str(roots.pop())
            prefix = "" if root == "." else root + "/"
            self.paths = {n[len(prefix):]: n for n in names if n.startswith(prefix)}
        elif data_dir.is_dir():
            root = data_dir / ROOT_NAME if (data_dir / ROOT_NAME / "wnids.txt").is_file() else data_dir
            self.paths = {p.relative_to(root).as_posix(): str(p) for p in sorted(root.rglob("*")) if p.is_file()}
        else:
            raise DatasetError(f"tinyimagenet: {data_dir} is neither a folder nor a .zip; expected {_LAYOUT}")
        self.where = data_dir

    def read(self, relative: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(self.paths[relative])
            return Path(self.paths[relative]).read_bytes()
        except KeyError:
            raise DatasetError(f"tinyimagenet: {self.where} has no {relative}; expected {_LAYOUT}") from None
        except (OSError, zipfile.BadZipFile) as e:
            raise DatasetError(f"tinyimagenet: cannot read {relative} in {self.where} ({e})") from None

    def text_lines(self, relative: str) -> list[str]:
        try:
            return [line for line in self.read(relative).decode("utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise DatasetError(f"tinyimagenet: {relative} in {self.where} is not text") from None


def _is_image(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in IMAGE_EXTENSIONS


@register_dataset(DatasetInfo(
    "tinyimagenet", "TinyImageNet-200, 64x64 colour, 200 classes, 100k/10k (its own layout, folder or .zip)",
    present=lambda folder: (folder / "wnids.txt").is_file() or (folder / ROOT_NAME / "wnids.txt").is_file(),
    hint=f"--data-dir {ROOT_NAME} (folder or .zip)", flip=True))
def load_tinyimagenet(data_dir: Path | None, download: bool, image_size: int | None) -> ImageDataset:
    """TinyImageNet's train/ and labelled val/ splits; classes are the sorted wnids (names from words.txt)."""
    if data_dir is None:
        raise DatasetError(f"tinyimagenet: pass --data-dir pointing at {_LAYOUT}")
    files = _Files(Path(data_dir))
    wnids = sorted({line.split()[0] for line in files.text_lines("wnids.txt")})
    index = {w: i for i, w in enumerate(wnids)}
    names = {}
    if "words.txt" in files.paths:
        for line in files.text_lines("words.txt"):
            wnid, _, words = line.partition("\t")
            names[wnid.strip()] = words.split(",")[0].strip() or wnid.strip()
    train = [(p, index[p.split("/")[1]]) for p in sorted(files.paths)
             if p.startswith("train/") and p.count("/") == 3 and p.split("/")[2] == "images" and _is_image(p)
             and p.split("/")[1] in index]
    val = []
    for line in files.text_lines("val/val_annotations.txt"):
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DatasetError(f"tinyimagenet: val/val_annotations.txt line {line[:80]!r} names no class of "
                               f"wnids.txt; expected <file> <tab> <wnid> ...")
        val.append((f"val/images/{parts[0]}", index[parts[1]]))
    val.sort()
    if not train or not val:
        raise DatasetError(f"tinyimagenet: no {'train' if not train else 'val'} images in {data_dir}; "
                           f"expected {_LAYOUT}")
    listed = train + val
    arrays = decode_all(((p, files.read(p)) for p, _ in listed), image_size)
    x = stack_images(arrays, [p for p, _ in listed], Path(data_dir))
    if x.shape[1] == 1:  # every image greyscale (only in toy sets): keep RGB as the real data is
        x = x.repeat(1, 3, 1, 1)
    y = torch.tensor([label for _, label in listed], dtype=torch.int64)
    n = len(train)
    classes = [names.get(w, w) for w in wnids]
    return ImageDataset.from_tensors("tinyimagenet", x[:n], y[:n], x[n:], y[n:], classes)

