"""`dcanas export`: verified ONNX and TorchScript files of a trained model (or of a genotype, untrained)."""
from __future__ import annotations

import argparse

from .common import add_eval_options, emit, eval_setting_from_args, refuse_network_options_for_model

ORDER = 70


def cmd_export(args: argparse.Namespace) -> int:
    """Export to ONNX (and TorchScript), each verified against PyTorch before it is written."""
    from ..errors import ConfigError
    from ..export import (check_opset, deployment_metadata, default_onnx_path, export_onnx, export_pt2,
                          export_torchscript, load_network, names_a_model)

    if not args.no_onnx:
        check_opset(args.opset, args.exporter)  # before loading, exporting or writing anything
    setting = None if names_a_model(args.source) else eval_setting_from_args(args, args.source)
    loaded = load_network(args.source, setting)
    image_size = None
    if loaded.trained:
        refuse_network_options_for_model(args, loaded.source)
        image_size = args.image_size  # a trained net runs at other resolutions (global pooling before the classifier)
    if args.no_onnx and not (args.torchscript or args.pt2):
        raise ConfigError("--no-onnx leaves nothing to export; add --pt2 FILE")
    if args.int8 and (args.no_onnx or not loaded.trained):
        raise ConfigError("--int8 quantises the ONNX export of a trained model (calibrated on its training data); "
                          + ("drop --no-onnx" if args.no_onnx else f"{loaded.source} is an untrained genotype"))
    if args.int8 and image_size not in (None, loaded.net.setting.image_size):
        raise ConfigError(f"--int8 calibrates and checks on the training images ({loaded.net.setting.image_size} px); "
                          f"drop --image-size {image_size}")
    if args.int8 and args.dynamic_batch:
        raise ConfigError("--int8 needs a fixed batch size (calibration ranges are per batch); drop --dynamic-batch")
    metadata = deployment_metadata(loaded, image_size)
    extra = loaded.extra or {}
    calibration = None
    if args.int8:  # the data first: a model that cannot be calibrated is refused before anything is written
        from ..quantize import calibration_images

        calibration = calibration_images(extra.get("preprocessing"), extra.get("config"), args.calibration_images,
                                         eval_images=args.eval_images)
    result: dict = {"source": loaded.source, "trained": loaded.trained, "setting": loaded.net.setting.to_dict()}
    lines = [f"model        {loaded.describe()}"]
    if not args.no_onnx:
        path = args.onnx or default_onnx_path(loaded, args.source)
        onnx = export_onnx(loaded.net, path, batch_size=args.batch_size, image_size=image_size,
                           dynamic_batch=args.dynamic_batch, opset=args.opset, exporter=args.exporter,
                           tolerance=args.tolerance, metadata=metadata)
        result["onnx"] = onnx
        lines += [f"onnx         {onnx['path']}  ({onnx['bytes'] / 1e6:.2f} MB, opset {onnx['opset']}, "
                  f"{onnx['exporter']} exporter)",
                  f"  input      {onnx['input_shape']} -> logits {onnx['output_shape']}",
                  f"  verified   onnxruntime vs PyTorch: max abs diff {onnx['max_abs_diff']:.2e} "
                  f"(tolerance {onnx['tolerance']:g} x max(1, |logits|)) at batch "
                  f"{' and '.join(map(str, onnx['verified_batch_sizes']))}",
                  f"  metadata   {onnx['metadata']} (also inside the file: input, preprocessing, classes, genotype, "
                  f"budgets)"]
    if args.int8:
        from ..quantize import export_int8

        report = export_int8(onnx["path"], args.int8, calibration, extra.get("preprocessing"), extra.get("config"),
                             eval_images=args.eval_images)
        result["int8"] = report
        f32, i8 = report["fp32"], report["int8"]
        lines += [f"int8         {args.int8}  ({i8['bytes'] / 1e6:.2f} MB, {i8['bytes'] / f32['bytes']:.0%} of fp32; "
                  f"calibrated on {report['calibration_images']} training images)",
                  f"  checked    test accuracy on {report['test_images']} images: fp32 {f32['test_acc']:.2%}, int8 "
                  f"{i8['test_acc']:.2%}; latency here: fp32 {f32['latency_ms']:.3f} ms, int8 "
                  f"{i8['latency_ms']:.3f} ms (median, onnxruntime CPU)"]
    if args.pt2:
        pt2 = export_pt2(loaded.net, args.pt2, image_size=image_size, tolerance=args.tolerance)
        result["pt2"] = pt2
        lines += [f"pt2          {pt2['path']}  ({pt2['bytes'] / 1e6:.2f} MB, torch.export program, any batch size; "
                  f"for ExecuTorch / AOTInductor)",
                  f"  verified   reloaded vs PyTorch: max abs diff {pt2['max_abs_diff']:.2e} at batch "
                  f"{' and '.join(map(str, pt2['verified_batch_sizes']))}"]
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
    from ..export import DEFAULT_OPSET, DEFAULT_TOLERANCE, DYNAMO_MIN_OPSET, EXPORTERS, opset_range
    from ..quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_EVAL_IMAGES

    p = command("export", cmd_export, "export a model to ONNX / TorchScript, verified against PyTorch")
    p.add_argument("source", help="a model.pt, a run folder holding one, or a genotype (name, file, DARTS text) "
                                  "for an untrained network, e.g. to profile it")
    p.add_argument("--onnx", metavar="FILE", help="ONNX output (default: next to the model, model.pt -> model.onnx)")
    p.add_argument("--no-onnx", action="store_true", help="only write --pt2 (or --torchscript)")
    p.add_argument("--pt2", metavar="FILE", help="also write a torch.export program (.pt2: ExecuTorch, AOTInductor)")
    p.add_argument("--torchscript", metavar="FILE",
                   help="also write a traced TorchScript file (torch.jit is deprecated by PyTorch; prefer --pt2)")
    p.add_argument("--int8", metavar="FILE", help="also write an int8 ONNX model (onnxruntime static quantisation, "
                                                  "calibrated on training images), with its accuracy, size, latency")
    p.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                   help=f"training images that set the int8 activation ranges (default {DEFAULT_CALIBRATION_IMAGES})")
    p.add_argument("--eval-images", type=int, default=DEFAULT_EVAL_IMAGES,
                   help=f"test images that score fp32 against int8 (default {DEFAULT_EVAL_IMAGES}, class-balanced)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the exported input (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="make the ONNX batch axis dynamic")
    (low, high), torchscript_high = opset_range(), opset_range("torchscript")[1]
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET}; {low}..{high} with this torch, the torchscript exporter "
                        f"up to {torchscript_high}, the dynamo one {DYNAMO_MIN_OPSET} or later)")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto",
                   help="torch.onnx exporter: torchscript (5x faster, half the file size here), dynamo (the "
                        "torch.export-based one; onnxscript comes with the export extra), auto (torchscript, dynamo "
                        "above its opsets, or if it fails or is gone)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"max abs difference from PyTorch, relative to max(1, |logits|) (default {DEFAULT_TOLERANCE:g})")
    add_eval_options(p)
