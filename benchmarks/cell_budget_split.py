"""Where a network's parameters sit: normal cells against reduction cells, for every genotype in reports.

Reads each backticked `Genotype(...)` in the given markdown reports (the end-to-end and perturbation reports
list every trained network), builds it as deployed (`--cells`, `--width`, `--image-size`, Fashion-MNIST's one
input channel and ten classes) and counts each cell module's parameters. The stem, the classifier and the
auxiliary head are the rest. Prints one row per genotype, then the mean per report.

    python benchmarks/cell_budget_split.py benchmarks/results/end_to_end_fashion-mnist_14px_basewidth.md --width 22
"""
from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

GENOTYPE_TEXT = re.compile(r"`(Genotype\(.*?\))`")
BASELINE = "DARTS_V2"  # listed in the reports beside the searched networks; kept out of the mean


def cell_params(genotype_text: str, cells: int, width: int, image_size: int) -> tuple[int, int, int]:
    """(normal-cell params, reduction-cell params, whole network's params without the auxiliary head)."""
    from dcanas.cost import count_params
    from dcanas.spaces.darts.genotype import parse_genotype
    from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for

    setting = eval_setting_for("fashion-mnist", cells=cells, channels=width, image_size=image_size)
    net = EvalNetwork(parse_genotype(genotype_text), setting)
    split = {True: 0, False: 0}
    for cell in net.cells:
        split[cell.reduction] += sum(p.numel() for p in cell.parameters())
    return split[False], split[True], count_params(net)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reports", nargs="+", type=Path, help="markdown reports holding `Genotype(...)` strings")
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--width", type=int, default=22, help="initial channels of every network in the reports")
    p.add_argument("--image-size", type=int, default=14)
    args = p.parse_args()
    from dcanas.spaces.darts.genotype import GENOTYPES, parse_genotype

    print(f"{args.cells} cells, width {args.width}, {args.image_size} px, Fashion-MNIST")
    print("| report | line (or baseline) | normal cells | reduction cells | reduction share | network |")
    print("|---|---|---|---|---|---|")
    for report in args.reports:
        shares, normals = [], []
        seen: set[str] = set()
        for number, line in enumerate(report.read_text().splitlines(), 1):
            for text in GENOTYPE_TEXT.findall(line):
                if text in seen:  # a baseline listed once per seed
                    continue
                seen.add(text)
                normal, reduce, total = cell_params(text, args.cells, args.width, args.image_size)
                baseline = parse_genotype(text) == GENOTYPES.get(BASELINE)
                if not baseline:  # the mean is the searched networks'
                    shares.append(reduce / total)
                    normals.append(normal)
                print(f"| {report.name} | {BASELINE if baseline else number} | {normal:,} | {reduce:,} | "
                      f"{reduce / total:.1%} | {total:,} |")
        if shares:
            print(f"| {report.name} | mean of {len(shares)} searched | {statistics.mean(normals):,.0f} | - | "
                  f"{statistics.mean(shares):.1%} | - |")


if __name__ == "__main__":
    main()
