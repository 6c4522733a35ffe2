"""Whether a search settled on a cell: how much of the alphas' derived cell moved late in the search.

A differentiable search ends by reading its alphas. If the cell they derive still changed in the last part
of the search, which op an edge got was decided by where the search happened to stop, not by a preference
the alphas had formed. DARTS+ stops a search
once its derived cell has stopped moving; we record the same signal and say so when it has not, so a user
knows that some ops are ties before spending hours training. (A longer search does not settle them all: in
the DARTS space 50 epochs on digits left as many edges unfixed as 15, BENCHMARKS.md §8f.)

The trace observes the derived cell after every alpha step (about a millisecond in the DARTS space, beside the
step's own loss read-back) and counts the steps at which it changed. Over the last quarter of the alpha steps it keeps the edges present at every
step: a final edge outside that set was not fixed then, whether the search drifted to it or an edge's two best
ops were tied and took turns. It is checkpointed with the search, so a resumed search reports what an
uninterrupted one does.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

LATE_FRACTION = 0.25  # "late in the search": its last quarter of alpha steps


def edges_changed(before: list[tuple], after: list[tuple]) -> int:
    """How many of `after`'s edges are not in `before` (each edge a (node, input, op) tuple; a multiset)."""
    return sum((Counter(after) - Counter(before)).values())


def common_edges(a: list[tuple], b: list[tuple]) -> list[tuple]:
    """The edges two cells share (as multisets), sorted."""
    return sorted((Counter(a) & Counter(b)).elements())


@dataclass
class SettlingTrace:
    """When, and how much, the alphas' derived cell changed during one search of `planned` alpha steps."""

    planned: int
    alpha_steps: int = 0
    changes: int = 0  # alpha steps after which the cell differed from the step before
    last_change: int = 0  # the last such step (0: none)
    late_changes: int = 0  # those in the last quarter
    cell: list[tuple] | None = None
    late_start: list[tuple] | None = None  # the cell when the last quarter began
    late_fixed: list[tuple] | None = None  # the edges present at every alpha step of the last quarter

    @property
    def late_from(self) -> int:
        """The alpha step after which the last quarter begins."""
        return self.planned - round(LATE_FRACTION * self.planned)

    def observe(self, edges: list[tuple]) -> None:
        """Record the derived cell (its edges) after one more alpha step."""
        edges = sorted(edges)
        self.alpha_steps += 1
        if self.cell is not None and edges != self.cell:
            self.changes += 1
            self.last_change = self.alpha_steps
            self.late_changes += self.alpha_steps > self.late_from
        self.cell = edges
        if self.alpha_steps == max(self.late_from, 1):
            self.late_start = self.late_fixed = edges
        elif self.late_fixed is not None:
            self.late_fixed = common_edges(self.late_fixed, edges)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (lists, ints and strings only: loadable with weights_only=True)."""
        return {"alpha_steps": self.alpha_steps, "changes": self.changes, "last_change": self.last_change,
                "late_changes": self.late_changes, "cell": self.cell, "late_start": self.late_start,
                "late_fixed": self.late_fixed}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a checkpoint's trace (a checkpoint from before the trace has none: start empty)."""
        state = state or {}
        self.alpha_steps, self.changes, self.last_change, self.late_changes = (
            int(state.get(k, 0)) for k in ("alpha_steps", "changes", "last_change", "late_changes"))
        self.cell, self.late_start, self.late_fixed = (
            [tuple(e) for e in state[k]] if state.get(k) is not None else None
            for k in ("cell", "late_start", "late_fixed"))

    def summary(self) -> dict[str, Any]:
        """Alpha steps, changes (all, last, in the last quarter), and the final edges the last quarter moved or
        did not hold fixed."""
        out = {"alpha_steps": self.alpha_steps, "changes": self.changes, "last_change": self.last_change,
               "late_changes": self.late_changes, "unchanged_for": self.alpha_steps - self.last_change}
        if self.cell is not None and self.late_start is not None:
            out.update(edges=len(self.cell), late_edges_changed=edges_changed(self.late_start, self.cell),
                       unsettled_edges=edges_changed(self.late_fixed, self.cell))
        return out

    def note(self) -> str | None:
        """One line for the report when some final edges were not fixed through the last quarter, else None."""
        s = self.summary()
        if not s.get("unsettled_edges"):
            return None
        return (f"{s['unsettled_edges']} of the cell's {s['edges']} edges were not fixed through the last quarter "
                f"of the search (the cell changed {s['late_changes']} times there, last at alpha step "
                f"{s['last_change']:,} of {s['alpha_steps']:,}): their ops are partly where the search stopped, "
                f"which a longer search does not always change; compare the cells of a few seeds (--repeats) "
                f"before training for hours")
