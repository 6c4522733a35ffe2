"""Counts for people and from people: '3.35M' out, '3.5M' in, one place for both directions."""
from __future__ import annotations

import math

_SCALES = (("G", 1e9), ("M", 1e6), ("K", 1e3))
# bytes per value of the dtypes a network may be deployed in (model bytes, peak memory, --max-model-bytes)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


def human(n: float, digits: int = 3) -> str:
    """3349342 -> '3.35M' (K, M and G suffixes; `digits` significant digits)."""
    for unit, scale in _SCALES:
        if abs(n) >= scale:
            return f"{n / scale:.{digits}g}{unit}"
    return f"{n:g}"


def parse_count(value: str) -> float:
    """'3.5M' -> 3500000.0; a positive, finite number with an optional K/M/G suffix (else ValueError)."""
    text = str(value).strip().upper()
    scale = dict(_SCALES).get(text[-1:], 1.0)
    number = text[:-1] if text[-1:] in "KMG" else text
    try:
        result = float(number) * scale
    except ValueError:
        raise ValueError(f"{value!r} is not a number (examples: 500000, 3.5M, 600M)") from None
    if not math.isfinite(result) or result <= 0:
        raise ValueError(f"{value!r} must be a positive, finite number")
    return result


def readable(value: float) -> str:
    """A size as people read it: 1,000,000 rather than 1e+06; small or fractional values keep 4 digits."""
    return f"{round(value):,}" if abs(value) >= 100 else f"{value:.4g}"


def amount(metric: str, value: float | None) -> str:
    """A budget's value as people read it: whole params/FLOPs with separators, latency in milliseconds."""
    if value is None:
        return "?"
    if metric == "latency":
        return f"{value:.3g} ms"
    return f"{round(value):,}"
