"""`dcanas count`: exact params and FLOPs of any genotype."""
from __future__ import annotations

import argparse

from .common import add_eval_options, emit, eval_setting_from_args, human
from ..units import DTYPE_BYTES

ORDER = 10


def cmd_count(args: argparse.Namespace) -> int:
    """Exact params and FLOPs of a genotype's evaluation network."""
    from ..cost import FLOPS_CONVENTION
    from ..memory import dtype_bytes, model_bytes, peak_activation_bytes
    from ..spaces.darts.cost import network_cost
    from ..spaces.darts.genotype import genotype_to_text, load_genotype
    from ..spaces.darts.network import EvalNetwork

    dtype_bytes(args.dtype)  # refuse an unknown dtype before building anything
    genotype = load_genotype(args.genotype)
    setting = eval_setting_from_args(args, args.genotype)
    cost = network_cost(genotype, setting)
    net = EvalNetwork(genotype, setting)
    memory = {"dtype": args.dtype, "peak_memory_bytes": peak_activation_bytes(net, dtype=args.dtype),
              "model_bytes": model_bytes(net, args.dtype)}
    result = {**cost.to_dict(), **memory, "setting": setting.to_dict(), "genotype": genotype_to_text(genotype),
              "flops_convention": FLOPS_CONVENTION}
    text = "\n".join([
        f"genotype        {genotype_to_text(genotype)}",
        f"network         {setting.style} stem, {setting.cells} cells, {setting.channels} channels, "
        f"{setting.in_channels}x{setting.image_size}x{setting.image_size} input, {setting.num_classes} classes",
        f"params          {cost.params:,} ({human(cost.params)}, without auxiliary head: what is deployed)",
        f"params with aux {cost.params_with_aux:,} ({human(cost.params_with_aux)})",
        f"FLOPs           {cost.flops:,} ({human(cost.flops)}; {FLOPS_CONVENTION})",
        f"peak memory     {memory['peak_memory_bytes']:,} bytes of activations at batch 1, {args.dtype} (execution "
        f"order; the input included)",
        f"model bytes     {memory['model_bytes']:,} ({args.dtype} weights, auxiliary head excluded)",
    ])
    emit(args, result, text)
    return 0



def register(command) -> None:
    """Add the subcommand."""
    p = command("count", cmd_count, "exact params and FLOPs of any genotype's evaluation network")
    p.add_argument("genotype", help="a built-in name (DARTS_V2, PC_DARTS, ...), a genotype .json/.txt file, "
                                    "a run folder, or DARTS text")
    p.add_argument("--dtype", default="float32",
                   help=f"deployed dtype of the memory counts: {', '.join(DTYPE_BYTES)} (default float32)")
    add_eval_options(p)

