"""`dcanas export`: verified ONNX and TorchScript files of a trained model (or of a genotype, untrained)."""
from __future__ import annotations

import argparse

from .common import add_eval_options, emit, eval_setting_from_args

ORDER = 70

# evaluation options that describe a genotype's network; a model file carries its own
_SHAPE_OPTIONS = ("cells", "channels", "num_classes", "in_channels", "style")


def cmd_export(args: argparse.Namespace) -> int:
    """Export to ONNX (and TorchScript), each verified against PyTorch before it is written."""
    from ..errors import ConfigError
    from ..export import default_onnx_path, export_onnx, export_torchscript, load_network

    setting = eval_setting_from_args(args, args.dataset)
    loaded = load_network(args.source, setting)
    image_size = None
    if loaded.trained:
        given = [f"--{k.replace('_', '-')}" for k in _SHAPE_OPTIONS if getattr(args, k, None) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} describe the network of a genotype; {loaded.source} carries its "
                              f"own (only --image-size may change the input size)")
        image_size = args.image_size  # a trained net runs at other resolutions (global pooling before the classifier)
    if args.no_onnx and not args.torchscript:
        raise ConfigError("--no-onnx leaves nothing to export; add --torchscript FILE")
    result: dict = {"source": loaded.source, "trained": loaded.trained, "setting": loaded.net.setting.to_dict()}
    lines = [f"model        {loaded.describe()}"]
    if not args.no_onnx:
        path = args.onnx or default_onnx_path(loaded, args.source)
        onnx = export_onnx(loaded.net, path, batch_size=args.batch_size, image_size=image_size,
                           dynamic_batch=args.dynamic_batch, opset=args.opset, exporter=args.exporter,
                           tolerance=args.tolerance)
        result["onnx"] = onnx
        lines += [f"onnx         {onnx['path']}  ({onnx['bytes'] / 1e6:.2f} MB, opset {onnx['opset']}, "
                  f"{onnx['exporter']} exporter)",
                  f"  input      {onnx['input_shape']} -> logits {onnx['output_shape']}",
                  f"  verified   onnxruntime vs PyTorch: max abs diff {onnx['max_abs_diff']:.2e} "
                  f"(tolerance {onnx['tolerance']:g} x max(1, |logits|)) at batch "
                  f"{' and '.join(map(str, onnx['verified_batch_sizes']))}"]
    if args.torchscript:
        ts = export_torchscript(loaded.net, args.torchscript, batch_size=args.batch_size, image_size=image_size,
                                tolerance=args.tolerance)
        result["torchscript"] = ts
        lines += [f"torchscript  {ts['path']}  ({ts['bytes'] / 1e6:.2f} MB, traced, any batch size)",
                  f"  verified   reloaded vs PyTorch: max abs diff {ts['max_abs_diff']:.2e} at batch "
                  f"{' and '.join(map(str, ts['verified_batch_sizes']))}"]
    lines.append("eval mode: BatchNorm running statistics, no drop-path, no auxiliary head")
    emit(args, result, "\n".join(lines))
    return 0


def register(command) -> None:
    """Add the subcommand."""
    from ..export import DEFAULT_OPSET, DEFAULT_TOLERANCE, EXPORTERS

    p = command("export", cmd_export, "export a model to ONNX / TorchScript, verified against PyTorch")
    p.add_argument("source", help="a model.pt, a run folder holding one, or a genotype (name, file, DARTS text) "
                                  "for an untrained network, e.g. to profile it")
    p.add_argument("--onnx", metavar="FILE", help="ONNX output (default: next to the model, model.pt -> model.onnx)")
    p.add_argument("--no-onnx", action="store_true", help="only write --torchscript")
    p.add_argument("--torchscript", metavar="FILE", help="also write a traced TorchScript file")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the exported input (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="make the ONNX batch axis dynamic")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto",
                   help="torch.onnx exporter: torchscript (fast), dynamo (needs onnxscript), auto (torchscript, "
                        "dynamo if it fails)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"max abs difference from PyTorch, relative to max(1, |logits|) (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--dataset", default="cifar10", help="a genotype's evaluation setting (default: cifar10)")
    add_eval_options(p)
