"""Checks on user options, shared by every config: each failure is one `ConfigError` line saying what to pass.

The configs (`SearchConfig.validate`, `validate_config` for training, `EvalSetting`) call these once, before
anything is loaded or written, so a bad option never becomes a traceback or a half-written run folder.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import torch

from .errors import ConfigError

# Sizes beyond these need terabytes of activations; refusing them early beats an allocator traceback.
MAX_CHANNELS = 1024
MAX_IMAGE_SIZE = 1024
MAX_CELLS = 64


def is_number(value: Any) -> bool:
    """A real number (not a bool, which Python counts as an int)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """An integer (not a bool, not a float that happens to be whole)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive(value: Any, *, allow_zero: bool = False) -> bool:
    """A finite number above zero (or at least zero)."""
    return is_number(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)


def int_in(value: Any, low: int, high: int | None = None) -> bool:
    """An integer in low..high (inclusive; no upper bound when high is None)."""
    return is_int(value) and value >= low and (high is None or value <= high)


def rate_check(flag: str, value: Any, *, allow_zero: bool = False) -> tuple[bool, str]:
    """A learning rate, weight decay, step size...: finite and positive (NaN and negatives refused)."""
    bound = ">= 0" if allow_zero else "> 0"
    return positive(value, allow_zero=allow_zero), f"{flag} must be a finite number {bound}, got {value}"


def raise_first(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise the message of the first failed (ok, message) pair."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def check_device(name: str) -> None:
    """Refuse a device name torch does not know, or an accelerator this machine does not have."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.backends.cuda.is_built() else f" (torch {torch.__version__} is a CPU-only build)"
            raise ConfigError(f"--device {name}: no CUDA GPU is available here{build}; use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {name}: dcanas runs on cpu, cuda or mps")


def check_finite_loss(value: float, what: str, where: str) -> None:
    """Stop a run whose loss went NaN or infinite, instead of saving and reporting a broken network."""
    if not math.isfinite(value):
        from .errors import DivergedError

        raise DivergedError(f"{what} diverged (loss {value} {where}); lower the learning rate (--lr) and start "
                            f"again — the last checkpoint, from before it diverged, is kept")
