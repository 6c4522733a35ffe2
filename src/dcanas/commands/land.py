"""`dcanas land SEARCH_DIR`: land a finished search in other budgets without searching again."""
from __future__ import annotations

import argparse

from .common import parse_count, stderr_log
from .search import print_search_result

ORDER = 32


def cmd_land(args: argparse.Namespace) -> int:
    """Land the search's final mixing weights in the budgets given; write a run folder of its own."""
    from ..reland import LANDING_FIELDS, land_search

    landing = {name: getattr(args, name, None) for name in LANDING_FIELDS}
    result = land_search(args.search_dir, landing, args.run_dir, log=stderr_log if not args.quiet else
                         (lambda message: None))
    return print_search_result(args, result.to_dict())


def register(command) -> None:
    """Add the subcommand."""
    p = command("land", cmd_land, "land a finished search in other budgets, without searching again")
    p.add_argument("search_dir", help="the folder of a finished `dcanas search` (best: --budget-scope landing or "
                                      "unconstrained, whose alphas no budget pulled)")
    g = p.add_argument_group("budgets to land in (K, M, G suffixes allowed); they replace the search's own")
    g.add_argument("--max-params", type=parse_count, help="parameters")
    g.add_argument("--max-flops", type=parse_count, help="multiply-accumulates at batch 1")
    g.add_argument("--max-latency", type=float, help="milliseconds on --latency-device")
    g.add_argument("--latency-device", help="a device of the benchmark's latency tables (pixel3, raspi4, ...)")
    g.add_argument("--rerank", metavar="PROXY", help="as `dcanas search --rerank` (default: the search's)")
    g.add_argument("--rerank-top", type=int, help="as `dcanas search --rerank-top` (default: the search's)")
    p.add_argument("--run-dir", help="where to write the landed network (default runs/<time>-<search>-landed)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
