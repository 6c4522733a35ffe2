"""Run folders: atomic writes, checkpoints, metric logs, and interrupt handling shared by every command."""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import RunDirError

CHECKPOINT = "checkpoint.pt"
RUN_INFO = "run.json"
# what a run folder holds before its first checkpoint: nothing worth keeping, safe to start afresh in it
BEFORE_CHECKPOINT = frozenset({"config.json", "tensorboard", RUN_INFO})


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only swap it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never half."""
    path = Path(path)
    if path.is_dir():
        raise RunDirError(f"cannot write {path}: it is a folder; give a file name (nothing was written)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise RunDirError(f"cannot write {path} ({exc.strerror}); check the folder and free space") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            # mkstemp makes the file private (0600); a run folder is readable like any file the user creates
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            kept = "the previous version is kept" if path.exists() else "nothing was written"
            raise RunDirError(f"cannot write {path} ({exc.strerror or exc}); {kept} — free some space or "
                              f"write it elsewhere") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic text write."""
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    """Atomic, pretty JSON write."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save `state` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def refuse_resume_after_max_steps(checkpoint: dict, max_steps: int | None, run_dir: Path, to_go_on: str) -> None:
    """A run --max-steps already stopped (and that wrote its result) has nothing left to resume: say so before
    anything in it is touched."""
    if (max_steps is not None and int(checkpoint.get("total_steps", 0)) >= max_steps
            and (Path(run_dir) / "result.json").is_file()):
        raise RunDirError(f"{run_dir} already stopped at --max-steps {max_steps} and its results stand; {to_go_on}")


def load_checkpoint(path: Path, what: str = "checkpoint",
                    if_damaged: str = "restart the run in a new folder") -> dict:
    """Load a checkpoint (or another torch file dcanas wrote: `what`), turning a missing or corrupt file into one clear
    RunDirError that ends with `if_damaged`."""
    path = Path(path)
    if not path.is_file():
        if what != "checkpoint":
            raise RunDirError(f"no {what} at {path}; {if_damaged}")
        raise RunDirError(f"no checkpoint at {path}; nothing to resume (start the run without --resume)")
    try:
        # weights_only: tensors and plain containers only; a pickled payload is refused, never run
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "allowed global" in str(exc) or "Unsupported global" in str(exc):
            raise RunDirError(f"{path} holds Python objects other than weights and plain data; dcanas loads "
                              f"only files it wrote itself and will not run code from a file") from None
        raise RunDirError(f"{what} {path} is unreadable (not a torch file, or truncated); {if_damaged}") from None
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise RunDirError(f"{what} {path} is unreadable ({type(exc).__name__}); it may be truncated, "
                          f"{if_damaged}") from None


def prepare_run_dir(run_dir: str | Path | None, resume: bool, default_name: str, root: str | Path = "runs",
                    resumable: bool = True) -> Path:
    """The run folder to use: new and empty for a fresh run, existing with a checkpoint for --resume
    (`resumable=False`: a command without --resume, whose refusal must not suggest it)."""
    if resume:
        if run_dir is None:
            raise RunDirError("--resume needs the run folder to continue")
        path = Path(run_dir)
        if not (path / CHECKPOINT).is_file():
            if stopped_before_checkpoint(path):
                raise RunDirError(f"{path} stopped before its first checkpoint, so there is nothing to resume; "
                                  f"run the same command without --resume to start it afresh in that folder")
            raise RunDirError(f"{path} holds no {CHECKPOINT}; nothing to resume")
        return path  # the caller records the resume in run.json once it has accepted the checkpoint
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{stamp}-{default_name}"
        n = 1
        while path.exists():
            n += 1
            path = Path(root) / f"{stamp}-{default_name}-{n}"
    else:
        path = Path(run_dir)
        if path.is_file():
            raise RunDirError(f"--run-dir {path} is a file; choose a folder")
        if stopped_before_checkpoint(path):
            clear_folder(path)  # only the config of a run that never got going: nothing to lose
        elif path.exists() and any(path.iterdir()):
            resume_hint = "add --resume to continue that run or " if resumable else ""
            raise RunDirError(f"{path} already holds files; {resume_hint}choose another --run-dir (nothing was "
                              f"changed)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the run folder {path} ({exc.strerror}); choose another --run-dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"the run folder {path} is not writable; choose another --run-dir")
    record_run_info(path)
    return path


def stopped_before_checkpoint(path: Path) -> bool:
    """True for a run folder that holds only what a run writes before its first checkpoint."""
    path = Path(path)
    if not path.is_dir() or (path / CHECKPOINT).exists():
        return False
    names = {p.name for p in path.iterdir()}
    return bool(names) and names <= BEFORE_CHECKPOINT


def clear_folder(path: Path) -> None:
    """Delete what a folder holds (files and sub-folders), keeping the folder itself."""
    for item in Path(path).iterdir():
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()


def _git_commit() -> str | None:
    """The commit of the dcanas source tree when it is a git checkout ('+dirty' with local changes)."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "."],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def run_info() -> dict[str, Any]:
    """Where and with what a run was made: versions, source commit, command line, host, time."""
    from . import __version__

    return {"dcanas": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": _git_commit(), "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "host": socket.gethostname(), "platform": platform.platform(),
            # which SIMD kernels torch picked: results differ in the last bits between them (and searches,
            # being chaotic, then differ), so a rerun on another CPU is not expected to match
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def record_run_info(path: Path, *, resumed: bool = False) -> None:
    """Write run.json for a new run; a resume adds its own entry, keeping the original."""
    info_path = Path(path) / RUN_INFO
    info = run_info()
    if resumed:
        try:
            previous = json.loads(info_path.read_text())
        except (OSError, ValueError):
            previous = {}
        if isinstance(previous, dict) and previous:
            previous.setdefault("resumed", []).append(info)
            info = previous
    write_json(info_path, info)


class MetricsLog:
    """Per-epoch metrics as CSV (and TensorBoard when installed); resuming drops rows past the checkpoint."""

    def __init__(self, path: Path, keep_epochs: int | None = None):
        self.path = Path(path)
        self.rows: list[dict] = []
        if keep_epochs is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < keep_epochs]
            self._rewrite()
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.path.parent / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.writer = None

    def append(self, row: dict) -> None:
        """Add one epoch's metrics."""
        self.rows.append(row)
        self._rewrite()
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, int(row["epoch"]))
            self.writer.flush()

    def _rewrite(self) -> None:
        if not self.rows:
            return
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, out.getvalue())

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.writer is not None:
            self.writer.close()


class StopRequest:
    """Set by SIGINT/SIGTERM so a loop can checkpoint at the next step boundary and exit."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Within the block, SIGINT/SIGTERM request a clean stop instead of killing the process."""
    request = StopRequest()
    previous = {}

    def handler(signum, frame):  # noqa: ARG001
        request.signal = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def rng_state() -> dict:
    """Every RNG state a run uses, for exact resume."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore `rng_state()`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
