"""The `dcanas` command line: parses arguments and calls the library; nothing else lives here."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from .errors import DcanasError

Handler = Callable[[argparse.Namespace], int]


def emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    """Print `result` as one JSON object with --json, else the human-readable `text`."""
    if getattr(args, "json", False):
        print(json.dumps(result, default=str))
    else:
        print(text)


def parse_count(value: str) -> float:
    """Parse a count with an optional K/M/G suffix: '3.5M' -> 3500000."""
    text = value.strip().upper()
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(text[-1:], 1.0)
    number = text[:-1] if text[-1:] in "KMG" else text
    try:
        result = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number (examples: 500000, 3.5M, 600M)") from None
    if result <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be positive")
    return result


def add_eval_options(p: argparse.ArgumentParser) -> None:
    """Options that describe the deployed evaluation network (defaults: the dataset's published setting)."""
    g = p.add_argument_group("evaluation network (defaults: the dataset's published setting)")
    g.add_argument("--cells", type=int, help="number of cells (CIFAR: 20, ImageNet: 14)")
    g.add_argument("--channels", type=int, help="initial channels (CIFAR: 36, ImageNet: 48)")
    g.add_argument("--classes", type=int, dest="num_classes", help="number of classes")
    g.add_argument("--in-channels", type=int, help="input channels (1 for grey images)")
    g.add_argument("--image-size", type=int, help="input resolution")
    g.add_argument("--style", choices=("cifar", "imagenet"), help="stem style")


def eval_setting_from_args(args: argparse.Namespace, dataset: str):
    """The EvalSetting for `dataset` with command-line overrides."""
    from .spaces.darts.network import eval_setting_for

    return eval_setting_for(dataset, cells=args.cells, channels=args.channels, num_classes=args.num_classes,
                            in_channels=args.in_channels, image_size=args.image_size, style=args.style)


def human(n: float) -> str:
    """3349342 -> '3.35M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def cmd_count(args: argparse.Namespace) -> int:
    """Exact params and FLOPs of a genotype's evaluation network."""
    from .cost import FLOPS_CONVENTION, network_cost
    from .spaces.darts.genotype import genotype_to_text, load_genotype

    genotype = load_genotype(args.genotype)
    setting = eval_setting_from_args(args, args.dataset)
    cost = network_cost(genotype, setting)
    result = {**cost.to_dict(), "setting": setting.to_dict(), "genotype": genotype_to_text(genotype),
              "flops_convention": FLOPS_CONVENTION}
    text = "\n".join([
        f"genotype        {genotype_to_text(genotype)}",
        f"network         {setting.style} stem, {setting.cells} cells, {setting.channels} channels, "
        f"{setting.in_channels}x{setting.image_size}x{setting.image_size} input, {setting.num_classes} classes",
        f"params          {cost.params:,} ({human(cost.params)}, without auxiliary head: what is deployed)",
        f"params with aux {cost.params_with_aux:,} ({human(cost.params_with_aux)})",
        f"FLOPs           {cost.flops:,} ({human(cost.flops)}; {FLOPS_CONVENTION})",
    ])
    emit(args, result, text)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the registered datasets and whether each is available here."""
    from .data import dataset_table

    rows = dataset_table()
    lines = [f"{'name':15} {'here':5} {'download':8} description"]
    for row in rows:
        lines.append(f"{row['name']:15} {'yes' if row['available'] else 'no':5} "
                     f"{'yes' if row['download'] else 'no':8} {row['description']}")
    emit(args, {"datasets": rows}, "\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="dcanas", description="Device Constraints-Aware NAS")
    parser.add_argument("--version", action="version", version=f"dcanas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        p.set_defaults(handler=handler)
        return p

    p = command("count", cmd_count, "exact params and FLOPs of any genotype's evaluation network")
    p.add_argument("genotype", help="a built-in name (DARTS_V2, PC_DARTS, ...), a genotype .json/.txt file, "
                                    "a run folder, or DARTS text")
    p.add_argument("--dataset", default="cifar10", help="picks the published setting (default: cifar10)")
    add_eval_options(p)

    command("datasets", cmd_datasets, "list datasets and whether they are available here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2; interrupts exit 130."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DcanasError as exc:
        print(f"dcanas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dcanas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
