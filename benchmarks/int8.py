"""fp32 against int8: test accuracy, file size and latency of DARTS_V2 and of a searched network.

    python benchmarks/int8.py --dataset fashion-mnist --train-subset 6000 --epochs 3

Trains DARTS_V2 (8 cells x 16 channels) and the network a short `dcanas search` finds under a parameter
budget (--channels auto), both with the same recipe and seed, then runs exactly what
`dcanas export RUN --int8 FILE` runs: the verified fp32 ONNX file, onnxruntime's static int8 quantisation
calibrated on training images, and both models scored on the same class-balanced test images and timed
on this CPU (onnxruntime, one thread, batch 1). Every ratio is int8 against fp32 of the same network,
measured in the same run. The trained run folders are reused when the script runs again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common import machine, study_command

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--train-subset", type=int, default=6000, help="training images (class-balanced)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of both networks")
    p.add_argument("--budget", default="250K", help="params budget of the searched network")
    p.add_argument("--search-steps", type=int, default=100, help="search steps (a short search)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "int8")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8.md")
    return p.parse_args(argv)


def trained(args: argparse.Namespace, name: str, genotype: str, **setting) -> Path:
    """The run folder of `genotype` trained with the study's recipe (reused when already there)."""
    from dcanas.train_loop import make_config, run_training

    folder = args.runs_dir / f"train-{name}"
    if not (folder / "model.pt").is_file():
        config = make_config(genotype, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                             train_subset=args.train_subset, seed=args.seed, **setting)
        run_training(config, folder, progress=True, log=lambda m: print(m, file=sys.stderr))
    return folder


def searched(args: argparse.Namespace) -> Path:
    """The search run folder of the short budgeted search (reused when already there)."""
    from dcanas.search_config import make_search_config
    from dcanas.search_loop import run_search
    from dcanas.units import parse_count

    folder = args.runs_dir / f"search-{args.budget}"
    if not (folder / "genotype.json").is_file():
        config = make_search_config(args.dataset, data_dir=args.data_dir, max_params=parse_count(args.budget),
                                    eval_channels="auto", max_steps=args.search_steps, seed=args.seed)
        run_search(config, folder, progress=True, log=lambda m: print(m, file=sys.stderr))
    return folder


def measure(args: argparse.Namespace, run: Path) -> dict:
    """fp32 and int8 files of a trained run, as `dcanas export --int8` writes them, and their check."""
    from dcanas.export import deployment_metadata, export_onnx, load_network
    from dcanas.quantize import calibration_images, export_int8

    loaded = load_network(run)
    extra = loaded.extra or {}
    fp32 = export_onnx(loaded.net, run / "model.onnx", metadata=deployment_metadata(loaded))
    calibration = calibration_images(extra["preprocessing"], extra["config"], args.calibration_images, args.seed)
    report = export_int8(fp32["path"], run / "model-int8.onnx", calibration, extra["preprocessing"],
                         extra["config"], eval_images=args.eval_images)
    s = loaded.net.setting
    return {"network": f"{s.cells} cells x {s.channels} channels", "genotype": run.name, **report,
            "full_range": full_range_check(fp32["path"], report["path"], calibration, extra, args)}


def full_range_check(fp32_path: str, int8_path: str, calibration: np.ndarray, extra: dict,
                     args: argparse.Namespace) -> dict:
    """The written (7-bit) int8 file beside the same quantisation with 8-bit weights (what export did before):
    accuracy on the test images the export's own check scored, and the largest logit error against fp32."""
    from dcanas.profile import make_session
    from dcanas.quantize import balanced_images, deployment_data, onnx_accuracy, quantize_int8

    fp32 = Path(fp32_path).read_bytes()
    # seed 0: the images quantize.int8_report draws, so the 7-bit column repeats the main table's int8 accuracy
    images, labels = balanced_images(deployment_data(extra["preprocessing"], extra["config"]), "test",
                                     args.eval_images, 0, extra["preprocessing"])

    def logits(model: bytes) -> np.ndarray:
        session = make_session(model, threads=1)
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: images[i:i + 1]})[0] for i in range(len(images))])

    reference = logits(fp32)
    scale = float(np.abs(reference).max())
    models = {"7bit": Path(int8_path).read_bytes(), "8bit": quantize_int8(fp32, calibration, reduce_range=False)}
    return {name: {"test_acc": onnx_accuracy(model, images, labels),
                   "max_logit_error": float(np.abs(logits(model) - reference).max()) / scale}
            for name, model in models.items()}


def int8_host() -> str:
    """onnxruntime's version and whether this x86 CPU has VNNI (without it, full-range int8 weights saturate)."""
    import onnxruntime

    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next(line for line in cpuinfo if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    vnni = "yes" if {"avx512_vnni", "avx_vnni"} & set(flags) else "no" if flags else "unknown"
    return f"onnxruntime {onnxruntime.__version__}, x86 VNNI: {vnni}"


def table(rows: list[dict], command: str) -> str:
    lines = [f"# fp32 vs int8 on {rows[0].get('dataset', '')}".rstrip(), "", "```", command, "```", "",
             f"Machine: {machine()}; {int8_host()}.", "",
             "| network | test images | fp32 acc % | int8 acc % | Δ pts | fp32 KB | int8 KB | size int8/fp32 | "
             "fp32 ms | int8 ms | latency int8/fp32 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, i = r["fp32"], r["int8"]
        lines.append(f"| {r['label']} ({r['network']}) | {r['test_images']} | {100 * f['test_acc']:.2f} | "
                     f"{100 * i['test_acc']:.2f} | {100 * (i['test_acc'] - f['test_acc']):+.2f} | "
                     f"{f['bytes'] / 1e3:.0f} | {i['bytes'] / 1e3:.0f} | {i['bytes'] / f['bytes']:.2f}x | "
                     f"{f['latency_ms']:.3f} | {i['latency_ms']:.3f} | {i['latency_ms'] / f['latency_ms']:.2f}x |")
    lines += ["", "Weights in 7 bits (the default) against the full 8 bits, the same calibration and test images; the "
              "logit error is the largest |int8 - fp32| over the test images, as a share of the largest |fp32| logit:",
              "", "| network | 7-bit acc % | 8-bit acc % | 7-bit logit error | 8-bit logit error |",
              "|---|---|---|---|---|"]
    for r in rows:
        seven, eight = r["full_range"]["7bit"], r["full_range"]["8bit"]
        lines.append(f"| {r['label']} | {100 * seven['test_acc']:.2f} | {100 * eight['test_acc']:.2f} | "
                     f"{seven['max_logit_error']:.1%} | {eight['max_logit_error']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = study_command("benchmarks/int8.py", sys.argv[1:] if argv is None else argv)
    rows = []
    darts_v2 = trained(args, "DARTS_V2", "DARTS_V2", cells=8, channels=16)
    rows.append({"label": "DARTS_V2", **measure(args, darts_v2)})
    search = searched(args)
    rows.append({"label": f"searched, params <= {args.budget}",
                 **measure(args, trained(args, f"searched-{args.budget}", str(search)))})
    for r in rows:
        r["dataset"] = args.dataset
    text = table(rows, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
