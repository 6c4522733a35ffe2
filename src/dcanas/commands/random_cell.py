"""`dcanas random-cell`: a random DARTS cell landed in a budget, the control a searched one should beat."""
from __future__ import annotations

import argparse

from .common import add_eval_options, emit, eval_setting_from_args, human, parse_count

ORDER = 33


def cmd_random_cell(args: argparse.Namespace) -> int:
    """Draw uniformly random genotypes from --seed until one uses 85-100 % of every budget; print it and its cost."""
    from ..constraint import Budget
    from ..errors import ConfigError
    from ..landing import LANDING_BAND
    from ..spaces.darts.candidates import random_in_band
    from ..spaces.darts.cost import build_cost_table, network_cost
    from ..spaces.darts.genotype import genotype_to_text

    budgets = [Budget(metric, limit) for metric, limit in (("params", args.max_params), ("flops", args.max_flops))
               if limit is not None]
    if not budgets:
        raise ConfigError("give a budget to land the random cell in: --max-params and/or --max-flops")
    setting = eval_setting_from_args(args)
    genotype, draws = random_in_band(build_cost_table(setting), budgets, args.seed, LANDING_BAND)
    cost = network_cost(genotype, setting)  # the network itself, not the table, reports the cost
    shares = {b.metric: getattr(cost, b.metric) / b.limit for b in budgets}
    result = {"genotype": genotype_to_text(genotype), "seed": args.seed, "draws": draws, "params": cost.params,
              "flops": cost.flops, "budgets": [b.to_dict() for b in budgets], "budget_use": shares,
              "setting": setting.to_dict()}
    text = "\n".join([
        f"genotype   {genotype_to_text(genotype)}",
        f"network    {setting.cells} cells, {setting.channels} channels, {setting.in_channels}x{setting.image_size}x"
        f"{setting.image_size} input, {setting.num_classes} classes",
        f"params     {cost.params:,} ({human(cost.params)})",
        f"FLOPs      {cost.flops:,} ({human(cost.flops)})",
        "budget use " + ", ".join(f"{metric} {share:.1%}" for metric, share in shares.items()),
        f"drawn      seed {args.seed}, {draws} draw{'s' if draws > 1 else ''} until one used "
        f"{100 * LANDING_BAND:.0f}-100 % of every budget",
    ])
    emit(args, result, text)
    return 0


def register(command) -> None:
    """Add the subcommand."""
    p = command("random-cell", cmd_random_cell,
                "a uniformly random DARTS cell using 85 to 100 percent of a budget: train it beside a searched one "
                "(`dcanas train GENOTYPE`) to see what the search added")
    p.add_argument("--max-params", type=parse_count, help="parameters, auxiliary head excluded (K, M suffixes)")
    p.add_argument("--max-flops", type=parse_count, help="multiply-accumulates at batch 1 (K, M, G suffixes)")
    p.add_argument("--seed", type=int, default=0, help="draws the cell (default 0)")
    add_eval_options(p)
