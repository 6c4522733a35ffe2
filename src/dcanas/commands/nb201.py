"""`dcanas nb201`: the NAS-Bench-201 space: look up, count, and fit device latency models."""
from __future__ import annotations

import argparse

from .common import emit, human

ORDER = 40
DATASETS = ("cifar10", "cifar100", "imagenet16-120")


def cmd_lookup(args: argparse.Namespace) -> int:
    """True accuracies, exact params/FLOPs and measured latencies of one architecture."""
    from ..spaces.nb201.bench import load_any_table
    from ..spaces.nb201.arch import arch_to_index, enumeration_index, format_arch, resolve_arch
    from ..spaces.nb201.cost import FLOPS_CONVENTIONS, nb201_cost
    from ..spaces.nb201.network import nb201_setting_for

    table = load_any_table(args.table)  # first: a missing table is the likeliest fault
    if args.arch.strip().isdigit():  # an index means the table's own row of that index
        found = table.lookup(int(args.arch), args.device)
        arch = resolve_arch(found["arch"])
    else:
        arch = resolve_arch(args.arch)
        found = table.lookup(arch, args.device)
    sizes = {ds: nb201_cost(arch, nb201_setting_for(ds)).to_dict() for ds in DATASETS}
    result = {**found, "enumeration_index": enumeration_index(arch), "params_flops": sizes,
              "flops_convention": FLOPS_CONVENTIONS["nb201"], "table": table.source}
    if arch_to_index(arch) != found["index"]:  # only a table in another order can disagree
        result["computed_index"] = arch_to_index(arch)
    lines = [f"arch      {format_arch(arch)}",
             f"index     {found['index']} (benchmark order; enumeration order {result['enumeration_index']})",
             f"{'dataset':16} {'test acc %':>10} {'params':>11} {'FLOPs':>13}"]
    for ds in DATASETS:
        acc = found["test_accuracy"].get(ds)
        acc_text = f"{acc:10.2f}" if acc is not None else f"{'-':>10}"
        lines.append(f"{ds:16} {acc_text} {sizes[ds]['params']:>11,} {sizes[ds]['flops_nb201']:>13,}")
    lines.append(f"FLOPs: {FLOPS_CONVENTIONS['nb201']} ({human(sizes['cifar10']['flops'])} MACs without biases)")
    lines.append("latency (ms, measured on the CIFAR-10 network):")
    for device, ms in found["latency_ms"].items():
        lines.append(f"  {device:16} {ms:10.4f}")
    emit(args, result, "\n".join(lines))
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    """Exact params and FLOPs of one architecture (no table needed)."""
    from ..spaces.nb201.arch import arch_to_index, format_arch, resolve_arch
    from ..spaces.nb201.cost import nb201_cost
    from ..spaces.nb201.network import nb201_setting_for

    arch = resolve_arch(args.arch)
    setting = nb201_setting_for(args.dataset, channels=args.channels, cells_per_stage=args.cells_per_stage)
    cost = nb201_cost(arch, setting)
    result = {"arch": format_arch(arch), "index": arch_to_index(arch), "setting": setting.to_dict(), **cost.to_dict()}
    d = cost.to_dict()
    text = "\n".join([
        f"arch        {format_arch(arch)} (index {result['index']})",
        (f"network     {setting.channels} channels, {setting.cells_per_stage} cells per stage, "
         f"{setting.in_channels}x{setting.image_size}x{setting.image_size} input, {setting.num_classes} classes"),
        f"params      {cost.params:,} ({human(cost.params)})",
        f"FLOPs       {cost.flops_nb201:,} ({human(cost.flops_nb201)}; {d['flops_nb201_convention']})",
        f"FLOPs       {cost.flops:,} ({human(cost.flops)}; {d['flops_convention']})",
    ])
    emit(args, result, text)
    return 0


def cmd_latency_fit(args: argparse.Namespace) -> int:
    """How well an additive per-edge, per-op model fits each device's measured latencies."""
    from ..spaces.nb201.bench import latency_fit_table, load_any_table
    from ..spaces.nb201.arch import EDGES
    from ..spaces.nb201.ops import PRIMITIVES

    table = load_any_table(args.table)
    models = latency_fit_table(table, args.device, exclude_none=args.no_none)
    domain = "architectures without `none`" if args.no_none else "architectures"
    lines = [f"additive latency model per device: least squares over {models[0].n} {domain} of {table.source}"]
    lines.append(f"{'device':16} {'R2':>7} {'mean rel err':>12} {'median rel err':>14} {'max |err| ms':>12}")
    for m in models:
        lines.append(f"{m.device:16} {m.r2:7.4f} {m.mean_rel_error:12.4f} {m.median_rel_error:14.4f} "
                     f"{m.max_abs_error:12.3f}")
    if args.device and len(models) == 1:
        m = models[0]
        lines.append(f"intercept {m.intercept:.4f} ms; coefficients (ms) per edge and op:")
        lines.append(f"{'edge':6} " + " ".join(f"{p:>13}" for p in PRIMITIVES))
        for (i, j), row in zip(EDGES, m.coef):
            lines.append(f"{f'{j}<-{i}':6} " + " ".join(f"{v:13.4f}" for v in row))
    result = {"table": table.source, "domain": models[0].domain,
              "models": [m.to_dict() if args.device else
                         {k: v for k, v in m.to_dict().items() if k != "coef_ms"} for m in models]}
    emit(args, result, "\n".join(lines))
    return 0


def register(command) -> None:
    """Add the subcommand and its actions."""
    p = command("nb201", None, "the NAS-Bench-201 space: benchmark look-up, exact counts, device latency models")
    actions = p.add_subparsers(dest="nb201_action", required=True, metavar="ACTION")

    def action(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: `--json` may also come before the action without being reset here
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print one JSON object instead of a table")
        a.set_defaults(handler=handler)
        return a

    table_help = ("the NB201 CSV or a HW-NAS-Bench .pickle (default: $DCANAS_NB201_TABLE, else "
                  "../shared/data/nb201/nb201_cifar10_hw.csv from the working directory)")
    arch_help = "a benchmark index (0..15624) or an architecture string like '|nor_conv_3x3~0|+|...|'"

    a = action("lookup", cmd_lookup, "true accuracies, exact params/FLOPs and measured latencies of an architecture")
    a.add_argument("arch", help=arch_help)
    a.add_argument("--device", action="append", help="only this device's latency (repeatable; default: all)")
    a.add_argument("--table", help=table_help)

    a = action("count", cmd_count, "exact params and FLOPs of an architecture's NB201 network (no table needed)")
    a.add_argument("arch", help=arch_help)
    a.add_argument("--dataset", default="cifar10", help="cifar10, cifar100 or imagenet16-120 (default: cifar10)")
    a.add_argument("--channels", type=int, help="initial channels (benchmark: 16)")
    a.add_argument("--cells-per-stage", type=int, help="cells per stage (benchmark: 5)")

    a = action("latency-fit", cmd_latency_fit, "fit quality of the additive per-edge latency model of each device")
    a.add_argument("--device", action="append", help="only this device (repeatable); one device also prints "
                                                     "its coefficients")
    a.add_argument("--no-none", action="store_true", help="fit only architectures without `none` edges "
                                                          "(the ones derive() returns by default)")
    a.add_argument("--table", help=table_help)
