"""Peak activation memory: the execution-order count (`dcanas count`) against what PyTorch really allocates.

    python benchmarks/peak_memory.py --genotypes 24

For DARTS_V2 and random genotypes in three deployed settings, one fp32 inference at batch 1:
"predicted" is `memory.peak_activation_bytes` (fx trace, sizes from shapes, each value freed after its last
use, BatchNorm folded, the input held throughout); "composed" is the per-op composition a search uses
(`spaces/darts/peak.py`), and "bounds" the exact smallest and largest peak any genotype has there; "graph" is the largest total of tensor storages alive while the traced
graph really runs (a dispatch-mode counter); "eager" is the same counter on the eager module, whose Python
locals keep some tensors alive longer (what `model(x)` costs in PyTorch itself). Each ratio is predicted
over a measurement of the same network in the same run.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys

from common import machine, study_command

SETTINGS = (("cifar10", {"cells": 8, "channels": 16}), ("fashion-mnist", {"cells": 5, "channels": 12}),
            ("digits", {}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--genotypes", type=int, default=24, help="random genotypes per setting")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from dcanas.memory import measured_peak_bytes, peak_activation_bytes
    from dcanas.spaces.darts.peak import genotype_peak_elements, peak_bounds
    from dcanas.spaces.darts.genotype import GENOTYPES, random_genotype
    from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for

    command = study_command("benchmarks/peak_memory.py", sys.argv[1:] if argv is None else argv)
    print(f"```\n{command}\n```\n\nMachine: {machine()}.\n")
    print("| setting | genotypes | bounds KB | predicted KB (min..max) | composed = predicted | "
          "predicted / graph (min..max) | exact matches | predicted / eager (mean) |")
    print("|---|---|---|---|---|---|---|---|")
    rng = random.Random(args.seed)
    for dataset, overrides in SETTINGS:
        setting = eval_setting_for(dataset, **overrides)
        genotypes = [GENOTYPES.get("DARTS_V2")] + [random_genotype(rng, 4) for _ in range(args.genotypes)]
        predicted, to_graph, to_eager, composed = [], [], [], 0
        for genotype in genotypes:
            net = EvalNetwork(genotype, setting)
            value = peak_activation_bytes(net)
            composed += 4 * genotype_peak_elements(genotype, setting) == value
            predicted.append(value)
            to_graph.append(value / measured_peak_bytes(net))
            to_eager.append(value / measured_peak_bytes(net, graph_order=False))
        exact = sum(r == 1.0 for r in to_graph)
        low, high = peak_bounds(setting)
        print(f"| {dataset} {setting.cells}x{setting.channels}, {setting.image_size} px | {len(genotypes)} | "
              f"{4 * low / 1e3:.1f}..{4 * high / 1e3:.1f} | {min(predicted) / 1e3:.1f}..{max(predicted) / 1e3:.1f} | "
              f"{composed}/{len(genotypes)} | {min(to_graph):.4f}..{max(to_graph):.4f} | "
              f"{exact}/{len(genotypes)} | {statistics.mean(to_eager):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
