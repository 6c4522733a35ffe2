"""Whether a search settled on a cell: how much of the alphas' derived cell moved late in the search.

A differentiable search ends by reading its alphas. If the cell they derive still changed in the last part
of the search, which op an edge got was decided by where the search happened to stop, not by a preference
the alphas had formed: the search was too short for the task (BENCHMARKS.md §8f). DARTS+ stops a search
once its derived cell has stopped moving; we record the same signal and say so when it has not, so a user
knows to search longer (or to average several searches, `--repeats`) before spending hours training.

The trace observes the derived cell after every alpha step (about a millisecond in the DARTS space), counts
the steps at which it changed, keeps the cell as it was when the last quarter of the alpha steps began, and
is checkpointed with the search, so a resumed search reports what an uninterrupted one does.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

LATE_FRACTION = 0.25  # "late in the search": its last quarter of alpha steps


def edges_changed(before: list[tuple], after: list[tuple]) -> int:
    """How many of `after`'s edges are not in `before` (each edge a (node, input, op) tuple; a multiset)."""
    return sum((Counter(after) - Counter(before)).values())


@dataclass
class SettlingTrace:
    """When, and how much, the alphas' derived cell changed during one search of `planned` alpha steps."""

    planned: int
    alpha_steps: int = 0
    changes: list[int] = field(default_factory=list)  # the alpha steps after which the cell differed
    cell: list[tuple] | None = None
    late_start: list[tuple] | None = None  # the cell when the last quarter began

    @property
    def late_from(self) -> int:
        """The alpha step after which the last quarter begins."""
        return self.planned - round(LATE_FRACTION * self.planned)

    def observe(self, edges: list[tuple]) -> None:
        """Record the derived cell (its edges) after one more alpha step."""
        edges = sorted(edges)
        self.alpha_steps += 1
        if self.cell is not None and edges != self.cell:
            self.changes.append(self.alpha_steps)
        self.cell = edges
        if self.alpha_steps == max(self.late_from, 1):
            self.late_start = edges

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (lists, ints and strings only: loadable with weights_only=True)."""
        return {"planned": self.planned, "alpha_steps": self.alpha_steps, "changes": list(self.changes),
                "cell": self.cell, "late_start": self.late_start}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a checkpoint's trace (a checkpoint from before the trace has none: start empty)."""
        state = state or {}
        self.alpha_steps = int(state.get("alpha_steps", 0))
        self.changes = [int(s) for s in state.get("changes", [])]
        self.cell, self.late_start = state.get("cell"), state.get("late_start")
        self.cell = [tuple(e) for e in self.cell] if self.cell is not None else None
        self.late_start = [tuple(e) for e in self.late_start] if self.late_start is not None else None

    def summary(self) -> dict[str, Any]:
        """Alpha steps, changes, the last one, those in the last quarter, and the edges the last quarter moved."""
        last = self.changes[-1] if self.changes else 0
        out = {"alpha_steps": self.alpha_steps, "changes": len(self.changes), "last_change": last,
               "late_changes": sum(1 for s in self.changes if s > self.late_from),
               "unchanged_for": self.alpha_steps - last}
        if self.cell is not None and self.late_start is not None:
            out.update(edges=len(self.cell), late_edges_changed=edges_changed(self.late_start, self.cell))
        return out

    def note(self) -> str | None:
        """One line for the report when the last quarter of the search changed the cell's edges, else None."""
        s = self.summary()
        if not s.get("late_edges_changed"):
            return None
        return (f"{s['late_edges_changed']} of the cell's {s['edges']} edges changed in the last quarter of the "
                f"search (the cell changed {s['late_changes']} times there, last at alpha step "
                f"{s['last_change']:,} of {s['alpha_steps']:,}): those choices are partly where the search "
                f"stopped; search longer (--epochs) or average several searches (--repeats)")
