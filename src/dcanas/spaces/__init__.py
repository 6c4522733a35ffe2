"""Search spaces, by name: `SPACES.get("darts")` / `SPACES.get("nb201")`."""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import Registry
from .base import SearchSpace
from .darts.space import DartsSpace

SPACES: Registry[SearchSpace] = Registry("search space", ConfigError)
SPACES.add("darts", DartsSpace())

try:  # the NAS-Bench-201 adapter registers itself when present
    from .nb201.space import NB201Space

    SPACES.add("nb201", NB201Space())
except ImportError:  # pragma: no cover - only while the adapter is being written
    pass

__all__ = ["SPACES", "SearchSpace"]
