"""NAS-Bench-201 architectures: the benchmark's string format, and index <-> architecture.

A cell has nodes 0..3; node j sums one op applied to each earlier node i (edge j<-i), so there are 6
edges, listed in the string's order: 1<-0 | 2<-0, 2<-1 | 3<-0, 3<-1, 3<-2. Example:
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.

Two orders number the 5^6 = 15,625 architectures:

- the *enumeration* order: ops per edge in PRIMITIVES order, the last edge varying fastest (how
  NAS-Bench-201 generates the space);
- the *benchmark* order (the index every NB201 file uses): that enumeration shuffled once with
  Python's ``random.seed(88)``, as the benchmark's generator did. We reproduce it and check it against
  sentinel architectures the benchmark's own code asserts; the tests check all 15,625 against the table.
"""
from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ...errors import GenotypeError
from .ops import NONE_INDEX, PRIMITIVES

EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (source i, dest j)
NUM_NODES = 4
NUM_EDGES = len(EDGES)
NUM_ARCHS = len(PRIMITIVES) ** NUM_EDGES
SHUFFLE_SEED = 88  # NAS-Bench-201's generator: random.seed(88); random.shuffle(archs)
# Benchmark indices whose architectures are known (asserted by NB201's generator, and the data README).
SENTINELS = {
    0: "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    1: "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    9: "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
}


class ArchError(GenotypeError):
    """A NAS-Bench-201 architecture string or index is malformed or out of range."""


@dataclass(frozen=True)
class Arch:
    """One NAS-Bench-201 cell: the op on each of the 6 edges, in EDGES order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        object.__setattr__(self, "ops", ops)
        if len(ops) != NUM_EDGES:
            raise ArchError(f"a NAS-Bench-201 cell has {NUM_EDGES} edges, got {len(ops)} ops")
        for (i, j), op in zip(EDGES, ops):
            if op not in PRIMITIVES:
                raise ArchError(f"edge {j}<-{i}: unknown op {op!r}; valid ops: {', '.join(PRIMITIVES)}")

    @classmethod
    def from_indices(cls, indices: Sequence[int]) -> Arch:
        """The architecture whose edge e carries PRIMITIVES[indices[e]]."""
        if len(indices) != NUM_EDGES or not all(0 <= int(k) < len(PRIMITIVES) for k in indices):
            raise ArchError(f"need {NUM_EDGES} op indices in 0..{len(PRIMITIVES) - 1}, got {list(indices)}")
        return cls(tuple(PRIMITIVES[int(k)] for k in indices))

    @property
    def op_indices(self) -> tuple[int, ...]:
        """Index into PRIMITIVES of each edge's op."""
        return tuple(PRIMITIVES.index(op) for op in self.ops)

    def edges(self) -> list[tuple[str, int, int]]:
        """(op, source i, destination j) for every edge."""
        return [(op, i, j) for op, (i, j) in zip(self.ops, EDGES)]

    def has_none(self) -> bool:
        """Whether any edge is `none` (such cells are never produced by derive(allow_none=False))."""
        return "none" in self.ops

    def is_connected(self) -> bool:
        """Whether node 3 depends on the cell input; if not, the cell always outputs zeros."""
        reached = {0}
        for op, i, j in self.edges():
            if op != "none" and i in reached:
                reached.add(j)
        return 3 in reached

    def to_str(self) -> str:
        """The benchmark's string format."""
        return format_arch(self)

    def __str__(self) -> str:
        return format_arch(self)


def format_arch(arch: Arch) -> str:
    """`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`: NAS-Bench-201's string for `arch`."""
    nodes = []
    for j in range(1, NUM_NODES):
        nodes.append("|" + "|".join(f"{op}~{i}" for op, i, jj in arch.edges() if jj == j) + "|")
    return "+".join(nodes)


def parse_arch(text: str) -> Arch:
    """Read a NAS-Bench-201 architecture string; a malformed one raises ArchError naming the fault."""
    if not isinstance(text, str):
        raise ArchError(f"a NAS-Bench-201 architecture must be a string, got {type(text).__name__}")
    s = text.strip()
    example = "e.g. |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"

    def fail(why: str) -> ArchError:
        return ArchError(f"invalid NAS-Bench-201 architecture {text!r}: {why} ({example})")

    groups = s.split("+")
    if len(groups) != NUM_NODES - 1:
        raise fail(f"{len(groups)} node group(s) separated by '+'; a cell needs {NUM_NODES - 1} (nodes 1, 2, 3)")
    chosen: dict[tuple[int, int], str] = {}
    for j, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise fail(f"node {j}'s group {group!r} must start and end with '|'")
        entries = group[1:-1].split("|")
        if len(entries) != j:
            raise fail(f"node {j} has {len(entries)} input(s); it needs {j}, one from each of nodes 0..{j - 1}")
        for entry in entries:
            op, sep, source = entry.partition("~")
            if not sep or not (source.isascii() and source.isdigit()):
                raise fail(f"node {j}: entry {entry!r} is not of the form op~input")
            i = int(source)
            if op not in PRIMITIVES:
                raise fail(f"node {j}: unknown op {op!r}; valid ops: {', '.join(PRIMITIVES)}")
            if not 0 <= i < j:
                raise fail(f"node {j}: input {i} is out of range; node {j} takes inputs 0..{j - 1}")
            if (i, j) in chosen:
                raise fail(f"node {j} lists input {i} twice")
            chosen[(i, j)] = op
    return Arch(tuple(chosen[e] for e in EDGES))


# -- the two orders ---------------------------------------------------------------------------

def enumeration_index(arch: Arch) -> int:
    """Position of `arch` in NAS-Bench-201's (unshuffled) enumeration: base-5 digits, last edge fastest."""
    n = 0
    for k in arch.op_indices:
        n = n * len(PRIMITIVES) + k
    return n


def arch_from_enumeration(n: int) -> Arch:
    """Inverse of enumeration_index."""
    _check_index(n)
    digits = []
    for _ in range(NUM_EDGES):
        n, k = divmod(n, len(PRIMITIVES))
        digits.append(k)
    return Arch.from_indices(digits[::-1])


@functools.lru_cache(maxsize=1)
def benchmark_order() -> tuple[int, ...]:
    """Enumeration index of each benchmark index: the generator's seeded shuffle, checked on sentinels."""
    order = list(range(NUM_ARCHS))
    # a private Random with the same seed gives the same permutation as the global random.seed(88)
    # the benchmark used, without touching anyone's global random state
    random.Random(SHUFFLE_SEED).shuffle(order)
    for index, expected in SENTINELS.items():
        if format_arch(arch_from_enumeration(order[index])) != expected:
            raise ArchError("this Python's random.shuffle no longer reproduces NAS-Bench-201's index order; "
                            "look indices up in the benchmark table (dcanas nb201 lookup --table PATH) instead")
    return tuple(order)


@functools.lru_cache(maxsize=1)
def _benchmark_position() -> tuple[int, ...]:
    position = [0] * NUM_ARCHS
    for index, n in enumerate(benchmark_order()):
        position[n] = index
    return tuple(position)


def index_to_arch(index: int) -> Arch:
    """The architecture with benchmark index `index` (0..15624), as every NAS-Bench-201 file numbers them."""
    _check_index(index)
    return arch_from_enumeration(benchmark_order()[index])


def arch_to_index(arch: Arch | str) -> int:
    """The benchmark index of `arch` (a string is parsed first)."""
    if isinstance(arch, str):
        arch = parse_arch(arch)
    return _benchmark_position()[enumeration_index(arch)]


def resolve_arch(spec: str | int | Arch) -> Arch:
    """An Arch from an Arch, a benchmark index (int or digit string), or an architecture string."""
    if isinstance(spec, Arch):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        return index_to_arch(spec)
    if isinstance(spec, str) and spec.strip().isdigit():
        return index_to_arch(int(spec.strip()))
    return parse_arch(spec)


def _check_index(index: int) -> None:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < NUM_ARCHS:
        raise ArchError(f"NAS-Bench-201 index {index!r} is out of range; indices are 0..{NUM_ARCHS - 1}")


def iter_archs() -> Iterator[Arch]:
    """All 15,625 architectures in benchmark index order."""
    for n in benchmark_order():
        yield arch_from_enumeration(n)


def random_arch(rng: random.Random | None = None, *, allow_none: bool = True) -> Arch:
    """A uniformly random architecture (over the none-free ones when `allow_none` is False)."""
    rng = rng or random.Random()
    choices = [k for k in range(len(PRIMITIVES)) if allow_none or k != NONE_INDEX]
    return Arch.from_indices([rng.choice(choices) for _ in range(NUM_EDGES)])
