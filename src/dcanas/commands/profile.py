"""`dcanas profile`: latency on this device (onnxruntime), of one model or of every candidate op (--ops)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_eval_options, emit, eval_setting_from_args, refuse_network_options_for_model

ORDER = 80


def _stats_text(stats: dict) -> str:
    return (f"median {stats['median_ms']:.3f} ms  (p10 {stats['p10_ms']:.3f}, p90 {stats['p90_ms']:.3f}, "
            f"IQR {stats['iqr_ms']:.3f}; {stats['runs']} runs)")


def _device_text(device: dict) -> str:
    return (f"{device['processor']}, {device['platform']}, onnxruntime {device['onnxruntime']} CPU, "
            f"{device['threads']} thread(s)")


def _check_timing(args: argparse.Namespace) -> None:
    """Refuse timing options that would measure nothing or fall back to a default, before exporting anything."""
    from ..checks import int_in, raise_first

    raise_first([
        (args.runs is None or int_in(args.runs, 1), f"--runs must be >= 1, got {args.runs}"),
        (int_in(args.rounds, 1), f"--rounds must be >= 1, got {args.rounds}"),
        (int_in(args.warmup, 0), f"--warmup must be >= 0, got {args.warmup}"),
        (int_in(args.batch_size, 1), f"--batch-size must be >= 1, got {args.batch_size}"),
        (int_in(args.threads, 0), f"--threads must be >= 0 (0: one per physical core), got {args.threads}"),
        (int_in(args.calibrate, 0), f"--calibrate must be >= 0 (0: no calibration), got {args.calibrate}"),
    ])


def cmd_profile_ops(args: argparse.Namespace) -> int:
    """Measure the per-op latency table of an evaluation setting and write it as JSON."""
    from ..spaces.darts.cost import build_cost_table
    from ..errors import ConfigError
    from ..spaces.darts.latency import DEFAULT_OP_RUNS, measure_latency_table

    if args.target:
        raise ConfigError("--ops measures every candidate op of an evaluation setting (--dataset, --cells, ...); "
                          "drop the model argument, or drop --ops to profile the model")
    setting = eval_setting_from_args(args)
    out = Path(args.out or f"latency-{args.dataset or 'cifar10'}-{setting.cells}x{setting.channels}.json")
    if out.is_dir():  # refused before minutes of measuring, not after
        raise ConfigError(f"--out {out} is a folder; give the latency table's file name")
    runs = DEFAULT_OP_RUNS if args.runs is None else args.runs
    table = measure_latency_table(setting, batch_size=args.batch_size, threads=args.threads, warmup=args.warmup,
                                  runs=runs, rounds=args.rounds, calibrate=args.calibrate, exporter=args.exporter,
                                  progress=not args.quiet, provider=args.provider, int8=args.int8)
    s = setting
    table.save(out)
    costs = build_cost_table(setting)
    costs.add_metric("latency", table.entries, table.fixed)
    low, high = costs.bounds("latency")
    distinct = sum(1 for r in table.measurements if r["op"] not in ("base", "placeholder") and "channels" in r)
    result = {"out": str(out), "setting": s.to_dict(), "units": "ms", "fixed": table.fixed,
              "bounds": {"min": low, "max": high}, "distinct_ops": distinct, "op_scale": table.method["op_scale"],
              "seconds": table.method["seconds"], "device": table.device}
    flags = f"--dataset {args.dataset or 'cifar10'} --cells {s.cells} --channels {s.channels}"
    lines = [f"latency table {out}",
             f"network       {s.style} stem, {s.cells} cells x {s.channels} channels, "
             f"{s.in_channels}x{s.image_size}x{s.image_size} input, batch {args.batch_size}",
             f"device        {_device_text(table.device)}",
             f"measured      {distinct} distinct (op, channels, stride, size) in context, the fixed part "
             f"({table.fixed:.3f} ms), in {table.method['seconds']:.0f} s",
             f"calibration   op scale {table.method['op_scale']:.3f}"
             + (f" (fitted on {args.calibrate} random networks)" if args.calibrate else " (none: --calibrate 0)"),
             f"deployable    {low:.3f} .. {high:.3f} ms (fixed part + cheapest / dearest ops)",
             f"use it        dcanas search {flags} --max-latency {(low + high) / 2:.3g} --latency-table {out}"]
    emit(args, result, "\n".join(lines))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """Latency of an ONNX file, a model.pt, or a genotype's network on this device."""
    from ..errors import ConfigError
    from ..profile import DEFAULT_RUNS, check_provider, profile_model

    check_provider(args.provider)  # before any measuring or writing
    _check_timing(args)
    if args.int8 and not args.ops:
        raise ConfigError("--int8 times the ops of a latency table (--ops); to time an int8 model, profile the "
                          "file `dcanas export --int8` wrote")
    if args.ops:
        return cmd_profile_ops(args)
    if not args.target:
        raise ConfigError("give a model to profile (model.onnx, model.pt, a run folder, or a genotype), "
                          "or --ops to measure the per-op latency table")
    runs = DEFAULT_RUNS if args.runs is None else args.runs
    options = dict(batch_size=args.batch_size, threads=args.threads, warmup=args.warmup, runs=runs,
                   rounds=args.rounds, progress=not args.quiet, provider=args.provider)
    target = Path(args.target)
    result: dict = {"target": args.target}
    lines = []
    if target.suffix == ".onnx":
        if args.latency_table:
            raise ConfigError("--latency-table predicts a genotype's latency; give the model.pt or the genotype "
                              "instead of the .onnx file")
        refuse_network_options_for_model(args, str(target))
        result.update(profile_model(target, image_size=args.image_size, **options))
        lines.append(f"model      {target} (input {result['input_shape']})")
        metadata = _onnx_metadata(target)
        if metadata:  # written by `dcanas export`: say what is being timed
            result["metadata"] = metadata
            lines.append(f"exported   {metadata.get('dtype', 'float32')}, {metadata.get('setting', {}).get('cells')} "
                         f"cells x {metadata.get('setting', {}).get('channels')} channels, from "
                         f"{metadata.get('source')}")
    else:
        from ..export import example_input, load_network, names_a_model, onnx_bytes

        setting = None if names_a_model(args.target) else eval_setting_from_args(args, args.target)
        loaded = load_network(args.target, setting)
        if loaded.trained:
            refuse_network_options_for_model(args, loaded.source)
        net = loaded.net
        costs = None
        if args.latency_table:  # refuse a table for another network before spending time measuring
            from ..spaces.darts.cost import build_cost_table
            from ..spaces.darts.latency import attach_latency_table

            costs = build_cost_table(net.setting)
            attach_latency_table(costs, args.latency_table)
        size = args.image_size if loaded.trained else None  # a genotype's --image-size is already in its setting
        model, _ = onnx_bytes(net, example_input(net, args.batch_size, size), exporter=args.exporter)
        result.update(profile_model(model, **options))
        result["setting"] = net.setting.to_dict()
        lines.append(f"model      {loaded.describe()}, exported to ONNX in memory")
        if costs is not None:
            predicted = costs.genotype_cost(net.genotype)["latency"]
            measured = result["latency"]["median_ms"]
            result["predicted_ms"] = predicted
            result["prediction_error"] = (predicted - measured) / measured
            lines.append(f"predicted  {predicted:.3f} ms from {args.latency_table} "
                         f"({result['prediction_error']:+.1%} against the measured median)")
    lines += [f"latency    {_stats_text(result['latency'])}",
              f"device     {_device_text(result['device'])}"]
    emit(args, result, "\n".join(lines))
    return 0


def _onnx_metadata(path: Path) -> dict:
    """The dcanas metadata of an ONNX file ({} when another tool wrote it or it cannot be read)."""
    try:
        from ..export import read_metadata

        return read_metadata(path)
    except Exception:  # a foreign or unreadable file: profiling itself reports what is wrong with it
        return {}


def register(command) -> None:
    """Add the subcommand."""
    from ..export import EXPORTERS
    from ..profile import DEFAULT_PROVIDER, DEFAULT_ROUNDS, DEFAULT_THREADS, DEFAULT_WARMUP

    p = command("profile", cmd_profile, "latency on this device (onnxruntime): of a model, or of every op (--ops)")
    p.add_argument("target", nargs="?", help="model.onnx, model.pt, a run folder, or a genotype (name, file, text)")
    p.add_argument("--ops", action="store_true",
                   help="measure every candidate op at every position of the evaluation network (--dataset and "
                        "evaluation options) into a latency table for `dcanas search --max-latency`")
    p.add_argument("--out", help="latency table to write with --ops (default latency-<dataset>-<cells>x<channels>.json)")
    p.add_argument("--calibrate", type=int, default=8, metavar="K",
                   help="with --ops: time K random whole networks and fit the op entries' scale to them "
                        "(default 8; 0 = raw op timings)")
    p.add_argument("--latency-table", help="also print the latency this table predicts for the model")
    g = p.add_argument_group("timing")
    g.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"onnxruntime intra-op threads (default {DEFAULT_THREADS}; 0 = one per physical core)")
    g.add_argument("--int8", action="store_true",
                   help="with --ops: time every op quantised to int8 (as `dcanas export --int8`), so --max-latency "
                        "can target an int8 deployment")
    g.add_argument("--provider", default=DEFAULT_PROVIDER,
                   help=f"onnxruntime execution provider (default {DEFAULT_PROVIDER}; an unknown name lists those "
                        f"this onnxruntime offers)")
    g.add_argument("--batch-size", type=int, default=1, help="batch size (default 1)")
    g.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help=f"untimed runs first (default {DEFAULT_WARMUP})")
    g.add_argument("--runs", type=int, help="timed runs (default 100; 200 per op with --ops)")
    g.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help=f"interleaved rounds the runs are split into (default {DEFAULT_ROUNDS})")
    g.add_argument("--exporter", choices=EXPORTERS, default="auto", help="torch.onnx exporter for models built here")
    add_eval_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
