"""Would a brief retraining pick the better of several NB201 searches? (the paper keeps the best of 5 by validation accuracy)

    python benchmarks/retrain_selection.py --epochs 3 --image-size 16
    python benchmarks/retrain_selection.py --epochs 2 --image-size 32

`--repeats` scores each search's derived network one-shot (the supernet's shared weights); on NB201 that
score turned out anti-correlated with the true accuracy (BENCHMARKS.md §12). The other reading of the
paper's "architecture with the highest validation accuracy" is to train each candidate from scratch for a
while and compare. This script asks whether that can work at a CPU budget: every architecture in `--runs`
(by default the nine unconstrained searches of §12) is trained from scratch on the search's own weight
half (class-balanced 10,000-image subset, seed 0, same split as the search) and scored on its alpha
half; the table gives that score beside NAS-Bench-201's test accuracy (200-epoch training) and the rank
agreement (Kendall tau, Spearman rho) between them. A selection rule is useful only if tau is clearly
above 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import machine, study_command

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = [ROOT / "benchmarks/results/search_quality_base_jobs2_none.json",
                ROOT / "benchmarks/results/search_quality_knobs/seeds3-8.json"]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10_jpg.tar.gz"
DEFAULT_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"


def ranks(values: list[float]) -> list[float]:
    """Ranks from 1 (ties share their mean rank)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a: (concordant - discordant) pairs over all pairs."""
    n = len(a)
    signs = [((a[i] > a[j]) - (a[i] < a[j])) * ((b[i] > b[j]) - (b[i] < b[j]))
             for i in range(n) for j in range(i + 1, n)]
    return sum(signs) / len(signs)


def spearman_rho(a: list[float], b: list[float]) -> float:
    """Pearson correlation of the ranks."""
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var


def retrained_score(arch: str, halves, args: argparse.Namespace) -> float:
    """Validation accuracy (%) of `arch` after `args.epochs` epochs from scratch on the weight half."""
    import torch
    import torch.nn.functional as F

    from dcanas.spaces.nb201.network import NB201Network, NB201Setting

    (train_x, train_y), (val_x, val_y) = halves
    torch.manual_seed(args.seed)
    net = NB201Network(arch, NB201Setting(channels=args.channels, cells_per_stage=args.cells,
                                          image_size=args.image_size))
    optimiser = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = len(train_x) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, args.lr, total_steps=args.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    generator = torch.Generator().manual_seed(args.seed)
    net.train()
    for _ in range(args.epochs):
        order = torch.randperm(len(train_x), generator=generator)
        for step in range(steps_per_epoch):
            rows = order[step * args.batch_size:(step + 1) * args.batch_size]
            flip = (torch.rand(len(rows), generator=generator) < 0.5).view(-1, 1, 1, 1)
            x = torch.where(flip, train_x[rows].flip(-1), train_x[rows])
            loss = F.cross_entropy(net(x), train_y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        correct = sum(int((net(val_x[i:i + 500]).argmax(1) == val_y[i:i + 500]).sum())
                      for i in range(0, len(val_x), 500))
    return 100.0 * correct / len(val_x)


def search_halves(args: argparse.Namespace):
    """The search's weight and alpha halves (same subset and split as `dcanas search --train-subset`),
    normalised and resized to `args.image_size`."""
    import torch
    import torch.nn.functional as F

    from dcanas.data import balanced_indices, load_dataset, split_indices

    data = load_dataset(args.dataset, args.data_dir)
    subset = balanced_indices(data.train_y, args.train_subset, seed=args.seed)
    weight_half, alpha_half = split_indices(len(subset), 0.5, seed=args.seed)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)

    def prepared(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (data.train_x[rows].float() / 255 - mean) / std
        if x.shape[-1] != args.image_size:
            x = F.interpolate(x, size=args.image_size, mode="bilinear", antialias=True, align_corners=False)
        return x, data.train_y[rows]

    return prepared(subset[weight_half]), prepared(subset[alpha_half])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=[str(r) for r in DEFAULT_RUNS],
                   help="search_quality.py result files whose architectures are scored")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--cells", type=int, default=1, help="cells per stage of the retrained network")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--train-subset", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--dataset", default="imagefolder")
    p.add_argument("--table", default=str(DEFAULT_TABLE))
    p.add_argument("--out", help="also write the records as JSON here")
    args = p.parse_args(argv)

    import torch
    from tqdm.auto import tqdm

    from dcanas.spaces.nb201.bench import load_nb201_table

    torch.set_num_threads(1)
    runs = [r for path in args.runs for r in json.loads(Path(path).read_text())["runs"]]
    table = load_nb201_table(args.table)
    halves = search_halves(args)
    command = study_command("benchmarks/retrain_selection.py", sys.argv[1:] if argv is None else argv)
    records = []
    for run in tqdm(runs, desc="retraining", dynamic_ncols=True):
        start = time.perf_counter()
        score = retrained_score(run["arch"], halves, args)
        records.append({"seed": run["seed"], "arch": run["arch"], "retrained_val_acc": score,
                        "test_acc_cifar10": float(table.accuracy["cifar10"][table.row(run["arch"])]),
                        "seconds": round(time.perf_counter() - start, 1)})
    scores = [r["retrained_val_acc"] for r in records]
    truth = [r["test_acc_cifar10"] for r in records]
    print(f"```\n{command}\n```\n\nMachine: {machine()}. Retrained: {args.cells} cell(s) per stage x "
          f"{args.channels} channels, {args.image_size} px, {args.epochs} epochs on {len(halves[0][0])} images, "
          f"scored on {len(halves[1][0])}.\n")
    print("| search seed | arch | retrained val % | NB201 CIFAR-10 test % | s |\n|---|---|---|---|---|")
    for r in records:
        print(f"| {r['seed']} | `{r['arch']}` | {r['retrained_val_acc']:.2f} | {r['test_acc_cifar10']:.2f} | "
              f"{r['seconds']:.0f} |")
    tau, rho = kendall_tau(scores, truth), spearman_rho(scores, truth)
    print(f"\nRank agreement with the table: Kendall tau {tau:+.2f}, Spearman rho {rho:+.2f} "
          f"({len(records)} architectures).")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": command, "kendall_tau": tau, "spearman_rho": rho,
                                              "records": records}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
