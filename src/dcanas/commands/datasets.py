"""`dcanas datasets`: what data is available here."""
from __future__ import annotations

import argparse

from .common import emit

ORDER = 20


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the registered datasets and whether each is available here."""
    from ..data import dataset_table

    rows = dataset_table()
    lines = [f"{'name':15} {'here':5} {'download':8} description"]
    for row in rows:
        lines.append(f"{row['name']:15} {'yes' if row['available'] else 'no':5} "
                     f"{'yes' if row['download'] else 'no':8} {row['description']}")
    emit(args, {"datasets": rows}, "\n".join(lines))
    return 0



def register(command) -> None:
    """Add the subcommand."""
    command("datasets", cmd_datasets, "list datasets and whether they are available here")

