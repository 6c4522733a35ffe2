"""`dcanas lug build|show`: the look-up graph from device budget to search budget (DCA-NAS sec. 3.2)."""
from __future__ import annotations

import argparse
from typing import Any

from .common import emit, human, parse_count, stderr_log
from .search import add_search_options

ORDER = 35


def count_list(value: str) -> list[float]:
    """'100K,150K,200K' -> [100000.0, 150000.0, 200000.0]."""
    return [parse_count(v) for v in value.split(",") if v.strip()]


def int_list(value: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]."""
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} must be comma-separated integers, e.g. 0,1,2") from None


def cmd_lug_build(args: argparse.Namespace) -> int:
    """Run the LUG's searches in parallel, fit the monotone curve, write lug.json, lug.png, report.md."""
    from ..lug import LUG_FILE, LUG_PLOT, build_lug
    from .search import search_config_from_args

    args.seed = None  # the look-up graph's --seeds decide each search's seed

    base = search_config_from_args(args)  # the search options, with the dataset's preset, budgets dropped
    lug, run_dir = build_lug(base, args.metric, args.lug_budgets, args.points, args.seeds, args.resume or args.run_dir,
                             resume=bool(args.resume), workers=args.workers, threads=args.threads,
                             executor=args.executor, ray_address=args.ray_address,
                             gpus_per_search=args.gpus_per_search, progress=not args.quiet,
                             log=stderr_log)
    result = {**lug.to_dict(), "lug": str(run_dir / LUG_FILE), "plot": str(run_dir / LUG_PLOT),
              "run_dir": str(run_dir)}
    emit(args, result, _table(lug) + f"\nlook-up graph  {run_dir / LUG_FILE}\nplot           {run_dir / LUG_PLOT}\n"
                                     f"use it         dcanas search --dataset {lug.dataset} --lug "
                                     f"{run_dir / LUG_FILE} --max-{lug.metric} ...")
    return 0


def cmd_lug_show(args: argparse.Namespace) -> int:
    """Print a LUG's points and fit, and look up device budgets."""
    from ..lug import load_lug

    lug = load_lug(args.file)
    lookups = [{"device_budget": b, "search_budget": lug.lookup(b)} for b in args.budget or []]
    lines = [_table(lug)] + [f"device {lug.metric} {human(x['device_budget'])} -> search budget "
                             f"{x['search_budget']:,.0f}" for x in lookups]
    emit(args, {**lug.to_dict(), "lookups": lookups}, "\n".join(lines))
    return 0


def _table(lug: Any) -> str:
    lines = [f"look-up graph  {lug.dataset}, {lug.metric} ({lug.unit}), {lug.setting['cells']} cells x "
             f"{lug.setting['channels']} channels, deployable {human(lug.bounds[0])} .. {human(lug.bounds[1])}",
             f"{'K_d_prime':>12} {'seed':>4} {'k_s at end':>12} {'K_d':>12} {'fitted':>12} {'K_d/K_d_prime':>13}"]
    for p in lug.points:
        ks = f"{p.search_size:12,.0f}" if p.search_size is not None else f"{'':12}"
        lines.append(f"{p.search_budget:12,.0f} {p.seed:4d} {ks} {p.derived:12,.0f} "
                     f"{lug.fitted(p.search_budget):12,.0f} {p.derived / p.search_budget:13.3f}")
    return "\n".join(lines)


def register(command) -> None:
    """Add the subcommand and its actions."""
    p = command("lug", None, "look-up graph: search budgets K_d' for device budgets K_d (the paper's constraint)")
    sub = p.add_subparsers(dest="lug_command", required=True, metavar="ACTION")

    def action(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: `dcanas lug --json build` keeps the flag the parent parser already set
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print one JSON object instead of a table")
        a.set_defaults(handler=handler, help_prog=a.prog)
        return a

    b = action("build", cmd_lug_build, "run searches at several search budgets and fit the look-up graph")
    b.set_defaults(unconstrained=True, no_bottleneck=False)  # what search_config_from_args reads
    add_search_options(b, for_lug=True)  # every option of one search, as `dcanas search` has them
    g = b.add_argument_group("the look-up graph")
    g.add_argument("--metric", choices=("params", "flops", "memory"), default="params",
                   help="budget metric (default params; memory = peak activation bytes at --deploy-dtype)")
    g.add_argument("--points", type=int, default=5,
                   help="search budgets spread over the deployable range (default 5)")
    g.add_argument("--search-budgets", type=count_list, metavar="LIST", dest="lug_budgets",
                   help="explicit search budgets K_d', comma-separated (K, M, G allowed); overrides --points")
    g.add_argument("--seeds", type=int_list, default=[0], metavar="LIST",
                   help="seeds per search budget, comma-separated (default 0)")
    g = b.add_argument_group("parallel execution")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local processes (default) or a Ray cluster")
    g.add_argument("--workers", type=int, help="local processes at once (default: the cores here)")
    g.add_argument("--threads", type=int, help="torch threads per search (default: cores // workers; Ray: 1)")
    g.add_argument("--gpus-per-search", type=float, default=0.0,
                   help="Ray: GPUs each search reserves (e.g. 1, or 0.5 to pack two per GPU; default 0: CPU only). "
                        "Local workers spread over this machine's GPUs by themselves")
    g.add_argument("--ray-address", help="Ray cluster to join (e.g. auto, ray://head:10001); default: a local one")
    b.add_argument("--run-dir", help="run folder (default: runs/<time>-lug-<dataset>-<metric>)")
    b.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted build (finished searches are kept)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    s = action("show", cmd_lug_show, "print a look-up graph and look up device budgets")
    s.add_argument("file", help="lug.json or the `lug build` run folder")
    s.add_argument("--budget", type=parse_count, action="append", help="device budget to look up (repeatable)")
