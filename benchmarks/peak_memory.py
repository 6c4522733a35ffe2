"""Peak activation memory: the execution-order count (`dcanas count`) against what PyTorch really allocates.

    python benchmarks/peak_memory.py --genotypes 24

For DARTS_V2 and random genotypes in three deployed settings, one fp32 inference at batch 1:
"predicted" is `memory.peak_activation_bytes` (fx trace, sizes from shapes, each value freed after its last
use, BatchNorm folded, the input held throughout); "composed" is the per-op composition a search uses
(`spaces/darts/peak.py`), and "bounds" the exact smallest and largest peak any genotype has there; "graph" is the largest total of tensor storages alive while the traced
graph really runs (a dispatch-mode counter); "eager" is the same counter on the eager module, whose Python
locals keep some tensors alive longer (what `model(x)` costs in PyTorch itself); "onnxruntime" is an
independent runtime: the exported ONNX file run by onnxruntime (CPU provider, its memory arena off so each
buffer is a real allocation): the most bytes the C/C++ heap holds at once during one run as memray traces it
(`pip install memray`; the columns are left out without it), plus the input image, which the caller owns,
once with every value allocated and freed on its own ("value by value": the count's own model, plus what the
kernels allocate for scratch) and once with onnxruntime's default planner ("planned": memory pattern and
buffer reuse). Each ratio is predicted over a measurement of the same network in the same
run.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import sys

from common import machine, study_command


SETTINGS = (("cifar10", {"cells": 8, "channels": 16}), ("fashion-mnist", {"cells": 5, "channels": 12}),
            ("digits", {}))


def onnxruntime_peak_bytes(net, trace_path: str, planned: bool) -> int:
    """Peak heap bytes while onnxruntime runs the exported `net` once, plus the input image. `planned`: its
    default memory-pattern planner (one block per run for all activations); otherwise every value is its own
    allocation, freed after its last use, and no buffer is kept for reuse."""
    import memray
    import numpy as np
    import onnxruntime as ort

    from dcanas.export import example_input, inference_copy, onnx_bytes

    model, _ = onnx_bytes(inference_copy(net), example_input(net))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False  # each buffer is a real allocation, so the heap shows it
    options.enable_mem_pattern = options.enable_mem_reuse = planned
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    x = example_input(net).numpy().astype(np.float32)
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed)  # the first run records the memory pattern; later runs allocate it whole
    if os.path.exists(trace_path):
        os.remove(trace_path)
    with memray.Tracker(trace_path, trace_python_allocators=False):
        session.run(None, feed)
    peak = memray.FileReader(trace_path).metadata.peak_memory
    os.remove(trace_path)
    return peak + x.nbytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--genotypes", type=int, default=24, help="random genotypes per setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace", default="peak_memory_trace.bin", help="scratch file for memray's trace")
    args = p.parse_args(argv)
    runtime = all(importlib.util.find_spec(name) for name in ("memray", "onnxruntime"))
    if not runtime:
        print("(memray or onnxruntime missing: the onnxruntime column is left out; pip install memray onnxruntime)\n")

    from dcanas.memory import measured_peak_bytes, peak_activation_bytes
    from dcanas.spaces.darts.peak import genotype_peak_elements, peak_bounds
    from dcanas.spaces.darts.genotype import GENOTYPES, random_genotype
    from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for

    command = study_command("benchmarks/peak_memory.py", sys.argv[1:] if argv is None else argv)
    print(f"```\n{command}\n```\n\nMachine: {machine()}.\n")
    extra = (" predicted / onnxruntime, value by value (min..max) | onnxruntime planned / predicted (min..max) |"
             if runtime else "")
    print("| setting | genotypes | bounds KB | predicted KB (min..max) | composed = predicted | "
          f"predicted / graph (min..max) | exact matches | predicted / eager (mean) |{extra}")
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if runtime else ""))
    rng = random.Random(args.seed)
    for dataset, overrides in SETTINGS:
        setting = eval_setting_for(dataset, **overrides)
        genotypes = [GENOTYPES.get("DARTS_V2")] + [random_genotype(rng, 4) for _ in range(args.genotypes)]
        predicted, to_graph, to_eager, to_ort, planned, composed = [], [], [], [], [], 0
        for genotype in genotypes:
            net = EvalNetwork(genotype, setting)
            value = peak_activation_bytes(net)
            composed += 4 * genotype_peak_elements(genotype, setting) == value
            predicted.append(value)
            to_graph.append(value / measured_peak_bytes(net))
            to_eager.append(value / measured_peak_bytes(net, graph_order=False))
            if runtime:
                to_ort.append(value / onnxruntime_peak_bytes(net, args.trace, planned=False))
                planned.append(onnxruntime_peak_bytes(net, args.trace, planned=True) / value)
        exact = sum(r == 1.0 for r in to_graph)
        low, high = peak_bounds(setting)
        print(f"| {dataset} {setting.cells}x{setting.channels}, {setting.image_size} px | {len(genotypes)} | "
              f"{4 * low / 1e3:.1f}..{4 * high / 1e3:.1f} | {min(predicted) / 1e3:.1f}..{max(predicted) / 1e3:.1f} | "
              f"{composed}/{len(genotypes)} | {min(to_graph):.4f}..{max(to_graph):.4f} | "
              f"{exact}/{len(genotypes)} | {statistics.mean(to_eager):.2f} |"
              + (f" {min(to_ort):.3f}..{max(to_ort):.3f} | {min(planned):.3f}..{max(planned):.3f} |" if runtime else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
