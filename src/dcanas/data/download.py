"""Resumable, checksummed, atomic downloads (urllib only) and safe tar extraction.

Set DCANAS_DOWNLOAD_MIRROR to fetch every file from another place: the URL's directory part
(scheme, host and path up to the last '/') is replaced by the mirror, e.g.
DCANAS_DOWNLOAD_MIRROR=http://intranet/datasets fetches http://intranet/datasets/<file name>.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ..errors import DatasetError

MIRROR_ENV = "DCANAS_DOWNLOAD_MIRROR"
CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class Remote:
    """A file to download and its published MD5 checksum."""

    url: str
    md5: str

    @property
    def filename(self) -> str:
        """The file's name: the last component of its URL."""
        return self.url.rsplit("/", 1)[-1]


def resolve_url(url: str) -> str:
    """The URL to fetch: `url`, or the same file under $DCANAS_DOWNLOAD_MIRROR when it is set."""
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if mirror else url


def md5_file(path: Path) -> str:
    """Hex MD5 of a file's contents."""
    digest = hashlib.md5(usedforsecurity=False)  # integrity against the published sums, not security
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(remote: Remote, directory: Path, label: str) -> Path:
    """Download `remote` into `directory` and return its path; `label` prefixes error messages.

    Bytes go to `<name>.part`, which a later call continues with an HTTP Range request; the file
    is renamed into place only once its MD5 matches, so a present file is always a complete one.
    """
    dest = directory / remote.filename
    if dest.is_file() and md5_file(dest) == remote.md5:
        return dest
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"{label}: cannot create {directory} ({e.strerror}); pass a writable --data-dir") from None
    part = dest.with_name(dest.name + ".part")
    url = resolve_url(remote.url)
    _fetch(url, part, label)
    actual = md5_file(part)
    if actual != remote.md5:
        part.unlink()
        raise DatasetError(
            f"{label}: checksum mismatch for {url} (md5 {actual}, expected {remote.md5}); the download was "
            f"deleted: run again, or put the right file at {dest}"
        )
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, label: str) -> None:
    """Append the rest of `url` to `part` (all of it if the server ignores Range)."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "dcanas"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            return  # the part file already holds every byte; the checksum decides
        raise DatasetError(f"{label}: downloading {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DatasetError(f"{label}: cannot download {url} ({reason}); check the network or use --data-dir") from None
    with response:
        if offset and response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                part.unlink()
                raise DatasetError(f"{label}: {url} answered with the wrong byte range; run again to restart")
        else:
            offset = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        written = offset
        try:
            with open(part, "ab" if offset else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5], leave=False, disable=None
            ) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    written += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:  # timeouts, resets: keep the part file to resume
            raise DatasetError(f"{label}: download of {url} interrupted ({e}); run again to resume") from None
    if total is not None and written < total:
        raise DatasetError(
            f"{label}: download of {url} stopped at {written} of {total} bytes; run again to resume"
        )


def extract_tar(archive: Path, directory: Path, label: str) -> None:
    """Extract a tar archive into `directory`, refusing links, devices and paths outside it.

    Members are extracted into a temporary folder first and moved into place at the end, so an
    interrupted extraction never leaves a half-written dataset folder behind.
    """
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
                    raise DatasetError(f"{label}: refusing to extract {archive}: unsafe member {member.name!r}")
            staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=directory))
            try:
                # filter="data" (Python >= 3.11.4) re-checks the same things and drops odd permissions.
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, members=members, **extra)
                for entry in staging.iterdir():
                    target = directory / entry.name
                    if target.exists():
                        raise DatasetError(
                            f"{label}: cannot extract {archive}: {target} already exists but is incomplete; "
                            "delete it and retry"
                        )
                    os.replace(entry, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"{label}: cannot extract {archive} ({e}); delete it and download it again") from None
