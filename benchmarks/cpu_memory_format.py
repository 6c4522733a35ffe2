"""CPU training speed: channels-last against the contiguous (NCHW) memory format, as `dcanas train` runs them.

    python benchmarks/cpu_memory_format.py --steps 8 --repeats 3

Each row times `dcanas train` (a fresh process, --threads T, stopped after --steps steps) once with
`--no-channels-last` and once with `--channels-last`, alternating, --repeats times; the figure per format is
the median of its runs' seconds per step (the step loop only: start-up and evaluation excluded), and the
speed-up is contiguous / channels-last from the same run. Settings: the digits preset (8x8 grey, the README's
main job), Fashion-MNIST-size 28x28 grey and CIFAR-size 32x32 colour (both `--dataset synthetic`, so nothing
needs downloading), and a 20-cell CIFAR network.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine

# (label, dcanas train arguments)
SETTINGS = [
    ("digits preset: 8 cells x 16, 8x8 grey, batch 64", ["--dataset", "digits"]),
    ("8 cells x 16, 28x28 grey, batch 96", ["--dataset", "synthetic", "--image-size", "28", "--cells", "8",
                                            "--channels", "16", "--batch-size", "96"]),
    ("8 cells x 36, 32x32 colour, batch 96", ["--dataset", "synthetic", "--cells", "8", "--channels", "36",
                                              "--batch-size", "96"]),
    ("20 cells x 36, 32x32 colour, batch 32", ["--dataset", "synthetic", "--cells", "20", "--channels", "36",
                                               "--batch-size", "32"]),
]
FORMATS = ("--no-channels-last", "--channels-last")


def seconds_per_step(args: list[str], steps: int, threads: int) -> float:
    """One `dcanas train` process: seconds per step of its step loop."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dcanas", "train", "DARTS_V2", *args, "--epochs", "1", "--max-steps", str(steps),
               "--threads", str(threads), "--quiet", "--json", "--run-dir", str(Path(tmp) / "run")]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    return result["train_seconds"] / result["steps"]


def main() -> int:
    """Time every setting in both formats and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    print(f"Machine: {machine()}; {args.threads} thread(s), {args.steps} steps, median of {args.repeats}.\n")
    print("| setting | contiguous s/step | channels-last s/step | speed-up |\n|---|---|---|---|")
    for label, setting in SETTINGS:
        times: dict[str, list[float]] = {f: [] for f in FORMATS}
        for _ in range(args.repeats):
            for fmt in FORMATS:  # alternating, so drifting load hits both alike
                times[fmt].append(seconds_per_step([*setting, fmt], args.steps, args.threads))
        plain, last = (statistics.median(times[f]) for f in FORMATS)
        print(f"| {label} | {plain:.3f} | {last:.3f} | {plain / last:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
