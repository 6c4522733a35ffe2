"""Search spaces, by name: `SPACES.get("darts")` / `SPACES.get("nb201")`."""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import Registry
from .base import SearchSpace
from .darts.space import DartsSpace
from .nb201.space import NB201Space

SPACES: Registry[SearchSpace] = Registry("search space", ConfigError)
SPACES.add("darts", DartsSpace())
SPACES.add("nb201", NB201Space())

__all__ = ["SPACES", "SearchSpace"]
