"""dcanas: Device Constraints-Aware Neural Architecture Search.

The public API (docs/api.md): `search`, `resume_search`, `train`, `create_model`, `load_model`, `count`.
They load on first use, so `import dcanas` and the command line's start stay light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DcanasError

__version__ = "0.1.0"

_LAZY = {"search": "api", "resume_search": "api", "train": "api", "create_model": "api", "load_model": "api",
         "count": "api", "NetworkCost": "cost", "SearchResult": "search_loop", "SearchConfig": "search_loop",
         "TrainResult": "train_loop", "TrainConfig": "train_loop", "Genotype": "spaces.darts.genotype"}
__all__ = ["DcanasError", "__version__", *_LAZY]

if TYPE_CHECKING:
    from .api import count, create_model, load_model, resume_search, search, train
    from .spaces.darts.cost import NetworkCost
    from .search_config import SearchConfig
    from .search_loop import SearchResult
    from .spaces.darts.genotype import Genotype
    from .train_loop import TrainConfig, TrainResult


def __getattr__(name: str) -> Any:
    """Import the API's modules on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'dcanas' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
