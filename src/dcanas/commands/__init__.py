"""One module per subcommand; each has `ORDER` and `register(command)`, and is found automatically."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable


def register_all(command: Callable) -> None:
    """Import every command module and let it add its subparser, in ORDER."""
    modules = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)
               if info.name != "common"]
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        module.register(command)
