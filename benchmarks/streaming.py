"""Streaming 224-px images: peak memory of search and training, loader speed against the step, stem cost.

    python benchmarks/streaming.py --search-steps 30 --train-steps 20

On the shared CIFAR-10 JPEG tarball (60,000 images) resized to 224 px, as an ImageNet-sized input:

1. `dcanas search --preset imagenet --data-mode stream` and `dcanas train --data-mode stream` for a few
   steps each, with the peak resident memory of the whole process tree (the main process plus its
   decoding workers, sampled every 0.2 s; shared pages are counted once per process, so this is an upper
   bound) against the ~9 GB the decoded set would take in memory.
2. The streamed loader's images/s (training augmentation, batch 64) against the images/s one search step
   consumes at the same batch: the loader must not be the bottleneck.
3. One search step at batch 64 with the ImageNet stem (224 px -> 28 before the cells) against the CIFAR
   stem on 32-px images (what a CIFAR search runs) and the CIFAR stem on 224-px images (a 224-px search
   without the stem).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import NOTES, machine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10_jpg.tar.gz"
DECODED_GB = 60_000 * 3 * 224 * 224 / 1e9


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of `pid` and all its descendants, from /proc."""
    total, stack, seen = 0.0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (OSError, ValueError):
            continue
    return total


def run_with_peak(cmd: list[str]) -> dict:
    """Run `cmd`; its wall time, exit status and the peak RSS of its process tree."""
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return {"seconds": round(time.time() - started, 1), "peak_rss_mb": round(peak[0]), "stdout": out}


def loader_rate(data_dir: str, batch: int, batches: int, workers: int) -> dict:
    """Images/s of the streamed training loader at 224 px (after one warm-up batch)."""
    from dcanas.data import load_dataset
    from dcanas.data.stream import make_loader

    started = time.time()
    data = load_dataset("imagefolder", data_dir, image_size=224, data_mode="stream")
    indexed = time.time() - started
    loader = make_loader(data, "train", None, batch, augment=True, seed=0, drop_last=True, workers=workers)
    it = loader.epoch(0)
    next(it)
    started = time.time()
    for _ in range(batches):
        next(it)
    seconds = time.time() - started
    return {"index_s": round(indexed, 1), "images_per_s": batch * batches / seconds, "workers": workers}


def step_time(stem: str, size: int, batch: int, steps: int) -> float:
    """Seconds per search step (an alpha step and a weight step) of the 8-cell, 16-channel supernet."""
    import torch

    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import BilevelStep, build_supernet

    torch.manual_seed(0)
    config = SearchConfig(search_stem=stem, amp=False)
    model = build_supernet(config, 3, 10)
    stepper = BilevelStep(model, config, None, torch.device("cpu"))
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))

    def step() -> None:
        stepper.alpha_step(x, y)
        stepper.weight_step(x, y)

    step()  # warm-up
    started = time.time()
    for _ in range(steps):
        step()
    return (time.time() - started) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--search-steps", type=int, default=30)
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train-cells", type=int, default=8, help="the trained network's cells (the paper's: 14)")
    p.add_argument("--train-channels", type=int, default=16, help="the trained network's channels (the paper's: 48)")
    p.add_argument("--loader-batches", type=int, default=20)
    p.add_argument("--step-repeats", type=int, default=2)
    p.add_argument("--small-batch", type=int, default=8, help="batch of the 224-px supernet without the stem")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "streaming.md"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    # (stem, image size, batch): the 224-px supernet without the stem's reduction does not fit batch 64 in 24 GB
    runs = {"ImageNet stem, 224 px": ("imagenet", 224, args.batch), "CIFAR stem, 32 px": ("cifar", 32, args.batch),
            "CIFAR stem, 224 px (no stem reduction)": ("cifar", 224, args.small_batch)}
    steps = {name: (step_time(stem, size, batch, args.step_repeats if size == 32 or stem == "imagenet" else 1), batch)
             for name, (stem, size, batch) in runs.items()}
    rates = [loader_rate(args.data_dir, args.batch, args.loader_batches, w) for w in (1, 2)]
    consumed = args.batch / steps["ImageNet stem, 224 px"][0]
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--dataset", "imagefolder", "--data-dir", args.data_dir, "--image-size", "224", "--data-mode",
                  "stream", "--batch-size", str(args.batch), "--quiet"]
        search = run_with_peak([sys.executable, "-m", "dcanas", "search", "--preset", "imagenet", *common,
                                "--unconstrained", "--epochs", "1", "--max-steps", str(args.search_steps),
                                "--run-dir", f"{tmp}/search"])
        train = run_with_peak([sys.executable, "-m", "dcanas", "train", "DARTS_V2", *common, "--cells",
                               str(args.train_cells), "--channels", str(args.train_channels), "--epochs", "1", "--warmup-epochs", "0",
                               "--max-steps", str(args.train_steps), "--eval-batch-size", "64",
                               "--run-dir", f"{tmp}/train"])
        train_setting = json.loads(Path(f"{tmp}/train/result.json").read_text())["setting"]
    command = " ".join(["python", "benchmarks/streaming.py", *sys.argv[1:]])
    lines = [
        "# Streaming 224-px images (`benchmarks/streaming.py`)", "", f"Command: `{command}`", "",
        f"Machine: {machine()}", "",
        "## Peak memory, whole process tree (main + decoding workers)", "",
        "| run | steps | wall s | peak RSS MB | vs the decoded set in memory (%.1f GB) |" % DECODED_GB,
        "|---|---|---|---|---|",
        f"| `dcanas search --preset imagenet` (8 cells x 16, ImageNet stem) | {args.search_steps} | "
        f"{search['seconds']} | {search['peak_rss_mb']} | {search['peak_rss_mb'] / 1e3 / DECODED_GB:.2f}x |",
        f"| `dcanas train DARTS_V2` ({train_setting['cells']} cells x {train_setting['channels']}, "
        f"{train_setting['style']} stem), then the 10,000-image test set | {args.train_steps} | {train['seconds']} | "
        f"{train['peak_rss_mb']} | {train['peak_rss_mb'] / 1e3 / DECODED_GB:.2f}x |", "",
        "## Loader against the step (batch %d, training augmentation)" % args.batch, "",
        "| decoding workers | indexing the tarball s | loader images/s | one search step consumes images/s | "
        "loader / step |", "|---|---|---|---|---|",
        *[f"| {r['workers']} | {r['index_s']} | {r['images_per_s']:.0f} | {consumed:.1f} | "
          f"{r['images_per_s'] / consumed:.1f}x |" for r in rates], "",
        "## Search step (8 cells x 16 channels, %d torch threads)" % torch.get_num_threads(), "",
        "| supernet | batch | s / step | ms / image | per image vs ImageNet stem at 224 px |", "|---|---|---|---|---|",
        *[f"| {name} | {batch} | {s:.2f} | {1e3 * s / batch:.1f} | "
          f"{(s / batch) / (steps['ImageNet stem, 224 px'][0] / args.batch):.2f}x |"
          for name, (s, batch) in steps.items()], "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    notes = out.read_text().split(NOTES, 1)[1] if out.is_file() and NOTES in out.read_text() else "\n"
    out.write_text(f"{text}\n{NOTES}{notes}")  # hand-written reading of the figures survives a rerun


if __name__ == "__main__":
    main()
