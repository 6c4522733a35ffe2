"""Peak activation memory: the execution-order count (`dcanas count`) against what PyTorch really allocates.

    python benchmarks/peak_memory.py --genotypes 24

For DARTS_V2 and random genotypes in three deployed settings, one fp32 inference at batch 1:
"predicted" is `memory.peak_activation_bytes` (fx trace, sizes from shapes, each value freed after its last
use, the input held throughout); "graph" is the largest total of tensor storages alive while the traced
graph really runs (a dispatch-mode counter); "eager" is the same counter on the eager module, whose Python
locals keep some tensors alive longer (what `model(x)` costs in PyTorch itself). Each ratio is predicted
over a measurement of the same network in the same run.
"""
from __future__ import annotations

import argparse
import random
import statistics

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
    from dcanas.spaces.darts.genotype import GENOTYPES, random_genotype
    from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for

    print(f"```\n{study_command('peak_memory.py', argv or [])}\n```\n\nMachine: {machine()}.\n")
    print("| setting | genotypes | predicted KB (min..max) | predicted / graph (min..max) | "
          "exact matches | predicted / eager (mean) |")
    print("|---|---|---|---|---|---|")
    rng = random.Random(args.seed)
    for dataset, overrides in SETTINGS:
        setting = eval_setting_for(dataset, **overrides)
        genotypes = [GENOTYPES.get("DARTS_V2")] + [random_genotype(rng, 4) for _ in range(args.genotypes)]
        predicted, to_graph, to_eager = [], [], []
        for genotype in genotypes:
            net = EvalNetwork(genotype, setting)
            value = peak_activation_bytes(net)
            predicted.append(value)
            to_graph.append(value / measured_peak_bytes(net))
            to_eager.append(value / measured_peak_bytes(net, graph_order=False))
        exact = sum(r == 1.0 for r in to_graph)
        print(f"| {dataset} {setting.cells}x{setting.channels}, {setting.image_size} px | {len(genotypes)} | "
              f"{min(predicted) / 1e3:.0f}..{max(predicted) / 1e3:.0f} | {min(to_graph):.4f}..{max(to_graph):.4f} | "
              f"{exact}/{len(genotypes)} | {statistics.mean(to_eager):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
