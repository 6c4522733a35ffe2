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


def channels_arg(value: str) -> int | str:
    """An even channel count, or 'auto'."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} must be an integer or 'auto'") from None


def search_config_from_args(args: argparse.Namespace):
    """SearchConfig from defaults, the dataset's preset, then what the user typed (in that order)."""
    from .search import SEARCH_PRESETS, SearchConfig

    values = SearchConfig().to_dict()
    values.update(SEARCH_PRESETS.get(args.dataset.lower(), {}))
    given = {k: v for k, v in vars(args).items() if k in values and v is not None}
    has_budget = any(given.get(k) is not None for k in ("max_params", "max_flops", "max_latency"))
    if not has_budget and not args.unconstrained:
        values.update(DEFAULT_BUDGETS.get(args.dataset.lower(), {}))
    values.update(given)
    if args.unconstrained:
        values.update(max_params=None, max_flops=None, max_latency=None)
    if args.no_bottleneck:
        values["bottleneck"] = 1
    return SearchConfig.from_dict(values)


# The budget `dcanas search` uses when none is given (only for the built-in dataset).
DEFAULT_BUDGETS = {"digits": {"max_params": 200_000}}


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume, or dry-run) a DCA-NAS search."""
    from .search import SearchConfig, dry_run, run_search

    if args.resume:
        result = run_search(SearchConfig(), args.resume, resume=True, progress=not args.quiet,
                            log=_stderr_log)
    else:
        config = search_config_from_args(args)
        if args.lug:
            from .lug import load_lug

            lug = load_lug(args.lug)
            config.search_budgets = lug.search_budgets(config.budgets())
            config.constraint = lug.constraint
        if args.dry_run:
            info = dry_run(config)
            lines = [f"supernet weights  {info['supernet_weights']:,}",
                     f"deployed network  {info['setting']}"]
            for metric, b in info["deployable"].items():
                lines.append(f"deployable {metric:7} {b['min']:,.6g} .. {b['max']:,.6g}")
            emit(args, info, "\n".join(lines))
            return 0
        result = run_search(config, args.run_dir, progress=not args.quiet, log=_stderr_log)
    r = result.to_dict()
    lines = [f"genotype  {r['genotype']}",
             f"params    {r['params']:,}   FLOPs {r['flops']:,}"]
    for metric, b in r["budgets"].items():
        lines.append(f"budget    {metric}: {b['value']:,.6g} <= {b['limit']:,.6g}  {'ok' if b['ok'] else 'EXCEEDED'}")
    if r["repairs"]:
        lines.append(f"repaired  {len(r['repairs'])} op(s) replaced to meet the budget (see report.md)")
    lines.append(f"run dir   {r['run_dir']}")
    emit(args, r, "\n".join(lines))
    return 0


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr)


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

    p = command("search", cmd_search, "search the network that fits the device budget (DCA-NAS)")
    p.add_argument("--dataset", default="digits", help="registered dataset (default: the built-in digits)")
    p.add_argument("--data-dir", help="where the dataset lives")
    p.add_argument("--image-size", type=int, dest="image_size", help="resize images (imagefolder)")
    g = p.add_argument_group("budgets of the deployed network (K, M, G suffixes allowed)")
    g.add_argument("--max-params", type=parse_count, help="parameters, auxiliary head excluded")
    g.add_argument("--max-flops", type=parse_count, help="multiply-accumulates at batch 1")
    g.add_argument("--max-latency", type=float, help="milliseconds, from --latency-table")
    g.add_argument("--latency-table", help="per-op latency table from `dcanas profile --ops`")
    g.add_argument("--unconstrained", action="store_true", help="no budget (plain DARTS-style search)")
    g.add_argument("--constraint", choices=("derived", "paper"),
                   help="cost estimate: exact derived network (default) or the paper's eq. 3")
    g.add_argument("--lug", help="look-up graph JSON: maps the device budget to the search budget")
    g.add_argument("--no-repair", dest="repair", action="store_const", const=False,
                   help="do not repair a derived network that exceeds a budget")
    g = p.add_argument_group("deployed evaluation network (defaults: the dataset's published setting)")
    g.add_argument("--cells", type=int, dest="eval_cells", help="cells of the deployed network")
    g.add_argument("--channels", type=channels_arg, dest="eval_channels",
                   help="initial channels of the deployed network, or 'auto' (widest that fits the budget well)")
    g = p.add_argument_group("supernet and search-time savings")
    g.add_argument("--search-cells", type=int, dest="cells", help="supernet cells (default 8)")
    g.add_argument("--search-channels", type=int, dest="channels", help="supernet channels (default 16)")
    g.add_argument("--bottleneck", type=int, help="channel bottleneck factor k (default 4)")
    g.add_argument("--no-bottleneck", action="store_true", help="candidate ops run on all channels")
    g.add_argument("--no-weight-sharing", dest="weight_sharing", action="store_const", const=False)
    g.add_argument("--no-derived-cells", dest="derived_cells", action="store_const", const=False)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="weight learning rate (cosine to 0)")
    g.add_argument("--arch-lr", type=float, help="alpha learning rate (Adam)")
    g.add_argument("--lambda-lr", type=float, help="multiplier step size")
    g.add_argument("--seed", type=int)
    g.add_argument("--max-steps", type=int, help="stop after this many search steps")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--run-dir", help="run folder (default: runs/<time>-<dataset>-<budget>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted search exactly")
    p.add_argument("--dry-run", action="store_true", help="build everything, print sizes, and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
