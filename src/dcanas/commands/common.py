"""Helpers shared by the subcommands: output, number parsing, evaluation-network options."""
from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..units import amount, human  # noqa: F401 - re-exported for the commands

if TYPE_CHECKING:  # the CLI imports torch only when a command needs it
    from ..spaces.darts.network import EvalSetting


def emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    """Print `result` as one JSON object with --json, else the human-readable `text`."""
    if getattr(args, "json", False):
        print(json.dumps(result, default=str))
    else:
        print(text)


def parse_count(value: str) -> float:
    """argparse type for counts with an optional K/M/G suffix: '3.5M' -> 3500000."""
    from ..units import parse_count as parse

    try:
        return parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _type_name(hint: Any) -> str:
    """How an option's type reads in an error message."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(args)} {_type_name(args[0]).removeprefix('a ')}s"
    if typing.get_origin(hint) is dict:
        return f"an object of {_type_name(args[1]).removeprefix('a ')}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text",
            type(None): "null"}.get(hint, str(hint))


def matches_type(value: Any, hint: Any) -> bool:
    """Whether a JSON/YAML value fits an option's annotated type (a bool is no number; an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(
            matches_type(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(matches_type(k, args[0]) and matches_type(v, args[1])
                                               for k, v in value.items())
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def load_config_file(path: str, schema: type, what: str) -> dict[str, Any]:
    """A saved config.json (or YAML) to rerun from: its values, refusing keys that `what` (the dataclass `schema`)
    does not have and values of the wrong type, so no option reaches the run unchecked."""
    from ..errors import ConfigError

    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"--config {file}: cannot read it ({exc.strerror})") from None
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError("--config with YAML needs PyYAML (pip install pyyaml); or pass the JSON") from None
            values = yaml.safe_load(text)  # safe_load: plain data only, never objects
        else:
            values = json.loads(text)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - JSON and YAML raise many types for a damaged file
        raise ConfigError(f"--config {file} is not valid {'YAML' if file.suffix in ('.yaml', '.yml') else 'JSON'} "
                          f"({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {file} must hold one object of options (like a run's config.json)")
    hints = typing.get_type_hints(schema)
    is_yaml = file.suffix.lower() in (".yaml", ".yml")
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"--config {file} has options a {what} does not take: {', '.join(unknown)}")
    for key, value in values.items():
        if (is_yaml and isinstance(value, str) and not matches_type(value, hints[key])
                and matches_type(1.0, hints[key])):
            try:  # YAML 1.1 reads 1e-3 (no dot) as text; a number-typed option takes it as the number it means
                value = values[key] = float(value)
            except ValueError:
                pass
        if not matches_type(value, hints[key]):
            raise ConfigError(f"--config {file}: {key} must be {_type_name(hints[key])}, got {json.dumps(value)}")
    return values


def add_eval_options(p: argparse.ArgumentParser) -> None:
    """Options that describe the deployed evaluation network (defaults: the dataset's published setting)."""
    g = p.add_argument_group("evaluation network (defaults: the dataset's published setting)")
    g.add_argument("--dataset",
                   help="picks the published setting: cifar10 (default), cifar100, imagenet, mnist, fashion-mnist, "
                        "tinyimagenet, digits, synthetic; any other name needs --in-channels, --image-size and "
                        "--classes (default for a search run folder: the network it searched)")
    g.add_argument("--cells", type=int, help="number of cells (CIFAR: 20, ImageNet: 14)")
    g.add_argument("--channels", type=int, help="initial channels (CIFAR: 36, ImageNet: 48)")
    g.add_argument("--classes", type=int, dest="num_classes", help="number of classes")
    g.add_argument("--in-channels", type=int, help="input channels (1 for grey images)")
    g.add_argument("--image-size", type=int, help="input resolution")
    g.add_argument("--style", choices=("cifar", "imagenet"), help="stem style")


def eval_setting_from_args(args: argparse.Namespace, genotype: str | None = None) -> EvalSetting:
    """The EvalSetting of --dataset (or of `genotype`, when it is a search run folder) with command-line overrides."""
    from ..train_loop import load_source, source_setting

    source = load_source(genotype) if genotype is not None else None
    return source_setting(source, args.dataset, cells=args.cells, channels=args.channels,
                          num_classes=args.num_classes, in_channels=args.in_channels, image_size=args.image_size,
                          style=args.style)


# evaluation options that describe a genotype's network; a trained model file carries its own
NETWORK_OPTIONS = ("dataset", "cells", "channels", "num_classes", "in_channels", "style")


def refuse_network_options_for_model(args: argparse.Namespace, source: str) -> None:
    """A trained model's network is fixed: options describing another one are refused, not silently ignored."""
    from ..errors import ConfigError
    from ..spaces.darts.network import option_name

    given = [option_name(k) for k in NETWORK_OPTIONS if getattr(args, k, None) is not None]
    if given:
        verb = "describes" if len(given) == 1 else "describe"
        raise ConfigError(f"{', '.join(given)} {verb} the network of a genotype; {source} carries its own "
                          f"(only --image-size may change the input size)")


def channels_arg(value: str) -> int | str:
    """An even channel count, or 'auto'."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} must be an integer or 'auto'") from None


def add_data_mode_options(p: argparse.ArgumentParser) -> None:
    """--data-mode, --strict and --data-workers: how image files reach the batches (search and train alike)."""
    g = p.add_argument_group("reading images (imagefolder)")
    g.add_argument("--data-mode", choices=("auto", "memory", "stream"),
                   help="memory: decode every image at start; stream: decode each batch in worker processes "
                        "(ImageNet augmentation, centre-crop evaluation); auto (default): stream when the decoded "
                        "set would not fit in a quarter of RAM (at most 4 GiB)")
    g.add_argument("--strict", dest="strict_images", action="store_const", const=True,
                   help="streamed: refuse a corrupt, empty or truncated image instead of skipping it")
    g.add_argument("--data-workers", type=int, help="streamed: decoding processes (default: one per spare core, "
                                                    "at most 8)")


def add_threads_option(group) -> None:
    """--threads, shared by the commands that train networks."""
    group.add_argument("--threads", type=int,
                       help="torch CPU threads, fixed for the run (default: DCANAS_THREADS, else 1 for small images "
                            "and the cores other processes leave free for larger ones; recorded for --resume)")


def stderr_log(message: str) -> None:
    """Progress messages go to the dcanas logger, which the command line sends to stderr (--json stays clean)."""
    from ..logs import LOG

    LOG.info(message)


