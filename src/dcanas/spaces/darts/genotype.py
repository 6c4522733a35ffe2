"""Genotypes in the published DARTS exchange format: parse, validate, write, and look up by name."""
from __future__ import annotations

import ast
import random
import json
import numbers
from collections import namedtuple
from pathlib import Path
from typing import Any, Sequence

from ...errors import GenotypeError
from ...registry import Registry
from .ops import PRIMITIVES

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
Genotype.__doc__ = "A DARTS cell pair: (op, input) edges, two per intermediate node, and the concatenated nodes."

GENOTYPES: Registry[Genotype] = Registry("genotype", GenotypeError)


def make_genotype(normal: Sequence, reduce: Sequence, normal_concat: Sequence[int] | None = None,
                  reduce_concat: Sequence[int] | None = None, *, allow_none: bool = False) -> Genotype:
    """Build and validate a genotype from edge lists; concat defaults to every intermediate node."""
    normal = [(str(op), _node_index(i)) for op, i in normal]
    reduce = [(str(op), _node_index(i)) for op, i in reduce]
    steps = len(normal) // 2
    genotype = Genotype(
        normal=normal,
        normal_concat=list(normal_concat) if normal_concat is not None else list(range(2, 2 + steps)),
        reduce=reduce,
        reduce_concat=list(reduce_concat) if reduce_concat is not None else list(range(2, 2 + steps)),
    )
    validate_genotype(genotype, allow_none=allow_none)
    return genotype


def _node_index(value: Any) -> int:
    """An edge's input node: an integer (2.7, true, 1e309 or "1" are refused, not rounded or cast)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GenotypeError(f"edge input {value!r} must be an integer node index")
    return int(value)


def validate_genotype(genotype: Genotype, *, allow_none: bool = False) -> None:
    """Raise GenotypeError naming the first fault: unknown op, bad input index, wrong edge count."""
    steps = None
    for cell in ("normal", "reduce"):
        edges = getattr(genotype, cell)
        if len(edges) == 0 or len(edges) % 2:
            raise GenotypeError(
                f"{cell} cell has {len(edges)} edges; a DARTS cell needs exactly two per intermediate node")
        if steps is None:
            steps = len(edges) // 2
        elif len(edges) // 2 != steps:
            raise GenotypeError(f"normal cell has {steps} nodes but reduce cell has {len(edges) // 2}")
        for k, edge in enumerate(edges):
            if not (isinstance(edge, (tuple, list)) and len(edge) == 2):
                raise GenotypeError(f"{cell} edge {k} is {edge!r}; expected (op_name, input_index)")
            op, index = edge
            if op not in PRIMITIVES or (op == "none" and not allow_none):
                valid = ", ".join(p for p in PRIMITIVES if p != "none")
                raise GenotypeError(f"{cell} edge {k}: unknown op {op!r}; valid ops: {valid}")
            node = 2 + k // 2
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < node:
                raise GenotypeError(
                    f"{cell} edge {k} (node {node}) takes input {index!r}; it must be an integer in 0..{node - 1}")
        concat = list(getattr(genotype, f"{cell}_concat"))
        bad = [c for c in concat if not isinstance(c, int) or isinstance(c, bool) or not 2 <= c < 2 + steps]
        if bad or not concat or len(set(concat)) != len(concat):
            raise GenotypeError(
                f"{cell}_concat {concat} is invalid; it must list distinct intermediate nodes in 2..{1 + steps}")


def genotype_to_text(genotype: Genotype) -> str:
    """The DARTS text form: `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)`."""

    def edges(es: Sequence) -> str:
        return "[" + ", ".join(f"({op!r}, {i})" for op, i in es) + "]"

    return (f"Genotype(normal={edges(genotype.normal)}, normal_concat={list(genotype.normal_concat)}, "
            f"reduce={edges(genotype.reduce)}, reduce_concat={list(genotype.reduce_concat)})")


def genotype_to_dict(genotype: Genotype) -> dict[str, Any]:
    """A JSON-ready dict with the four genotype fields."""
    return {
        "normal": [[op, i] for op, i in genotype.normal],
        "normal_concat": list(genotype.normal_concat),
        "reduce": [[op, i] for op, i in genotype.reduce],
        "reduce_concat": list(genotype.reduce_concat),
    }


def genotype_from_dict(data: Any) -> Genotype:
    """Validate and build a genotype from the dict written by `genotype_to_dict`."""
    if isinstance(data, dict) and "genotype" in data and "normal" not in data:
        data = data["genotype"]  # accept a run's result file, which nests the genotype
    if not isinstance(data, dict) or not {"normal", "reduce"} <= set(data):
        raise GenotypeError("genotype JSON must be an object with 'normal' and 'reduce' edge lists")
    try:
        return make_genotype(data["normal"], data["reduce"], data.get("normal_concat"), data.get("reduce_concat"))
    except (TypeError, ValueError) as exc:
        raise GenotypeError(f"malformed genotype JSON: {exc}") from None


def _literal(node: ast.AST) -> Any:
    """Evaluate a literal or a `range(a, b)` call, nothing else (no eval of user text)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        return list(range(*[_literal(a) for a in node.args]))
    return ast.literal_eval(node)


def parse_genotype(text: str) -> Genotype:
    """Parse the DARTS text form `Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)`."""
    text = text.strip()
    if "=" in text.split("(", 1)[0]:  # accept "DARTS_V2 = Genotype(...)" as printed in genotypes.py
        text = text.split("=", 1)[1].strip()
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise GenotypeError(f"cannot parse genotype text: {exc.msg} at column {exc.offset}") from None
    if not (isinstance(tree, ast.Call) and getattr(tree.func, "id", None) == "Genotype"):
        raise GenotypeError("genotype text must look like Genotype(normal=[...], normal_concat=..., reduce=[...], "
                            "reduce_concat=...)")
    fields = list(Genotype._fields)
    values: dict[str, Any] = {}
    try:
        for name, arg in zip(fields, tree.args):
            values[name] = _literal(arg)
        for kw in tree.keywords:
            if kw.arg not in fields:
                raise GenotypeError(f"unknown genotype field {kw.arg!r}; fields are {', '.join(fields)}")
            values[kw.arg] = _literal(kw.value)
    except (ValueError, TypeError, SyntaxError):
        raise GenotypeError("genotype text may only contain literals and range(a, b)") from None
    missing = [f for f in ("normal", "reduce") if f not in values]
    if missing:  # said in the text's own terms, not the JSON's
        raise GenotypeError(f"genotype text lacks {' and '.join(missing)}=[...]: a DARTS genotype lists the edges of "
                            "both cells")
    return genotype_from_dict(values)


def load_genotype(spec: str | Path) -> Genotype:
    """A genotype from a registered name, a .json/.txt file, or literal DARTS text."""
    text = str(spec)
    if text in GENOTYPES:
        return GENOTYPES.get(text)
    if text.lstrip().startswith("Genotype(") or text.lstrip().startswith("{"):
        return _from_text(text, "argument")
    path = Path(text).expanduser()
    if path.is_dir() and (path / "genotype.json").is_file():
        path = path / "genotype.json"  # a run folder
    if path.is_dir() and (path / "model.pt").is_file():  # model_io.MODEL_FILE (importing it here would be circular)
        raise GenotypeError(f"{text} is a training run (it holds model.pt, not a genotype): export or profile it, "
                            f"pass the search run it trained, or, if it was interrupted, `dcanas train --resume {text}`")
    if not path.is_file():
        known = ", ".join(GENOTYPES.names())
        raise GenotypeError(f"{text!r} is neither a known genotype ({known}) nor a genotype file")
    try:
        content = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise GenotypeError(f"cannot read genotype file {path}: {exc}") from None
    return _from_text(content, str(path))


MAX_GENOTYPE_TEXT = 100_000  # a 20-node genotype is well under 2,000 characters


def _from_text(content: str, where: str) -> Genotype:
    if len(content) > MAX_GENOTYPE_TEXT:
        raise GenotypeError(f"{where}: {len(content):,} characters is far too long for a genotype")
    try:
        if content.lstrip().startswith("{"):
            try:
                data = json.loads(content)
            except json.JSONDecodeError as exc:
                raise GenotypeError(f"{where}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
            return genotype_from_dict(data)
        return parse_genotype(content)
    except (RecursionError, MemoryError):
        raise GenotypeError(f"{where}: nested too deeply to be a genotype") from None


def save_genotype(genotype: Genotype, path: str | Path) -> None:
    """Write `genotype` as JSON (path ending .json) or DARTS text (anything else)."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps(genotype_to_dict(genotype), indent=2) + "\n")
    else:
        path.write_text(genotype_to_text(genotype) + "\n")


# Published genotypes, exactly as printed in the DARTS and PC-DARTS repositories.
GENOTYPES.add("DARTS_V1", make_genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]))
GENOTYPES.add("DARTS_V2", make_genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]))
GENOTYPES.add("PC_DARTS", make_genotype(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)]))
GENOTYPES.add("PC_DARTS_IMAGENET", make_genotype(
    normal=[("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
    reduce=[("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
            ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)]))
GENOTYPES.add("DARTS", GENOTYPES.get("DARTS_V2"))


def random_genotype(generator: random.Random, steps: int = 4) -> Genotype:
    """A uniformly random valid genotype (two distinct inputs per node, no `none`), for tests and profiling."""
    ops = [p for p in PRIMITIVES if p != "none"]

    def cell() -> list[tuple[str, int]]:
        edges = []
        for node in range(2, 2 + steps):
            for index in generator.sample(range(node), 2):
                edges.append((generator.choice(ops), index))
        return edges

    return make_genotype(cell(), cell())
