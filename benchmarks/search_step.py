"""Seconds per search step and peak memory: plain DARTS vs each DCA-NAS saving, and the child network.

    python benchmarks/search_step.py --batch 32 64 --steps 3

Every configuration runs in its own subprocess (so peak memory is its own) on 32x32x3 inputs with an
8-cell, 16-channel supernet; a step is one alpha step (validation batch) plus one weight step
(training batch), exactly as `dcanas search` runs them. Ratios are against plain DARTS and against
the training step of the derived 8-cell child network, measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import CONFIGS, peak_rss_mb


def worker(name: str, batch: int, steps: int, warmup: int, device_name: str) -> dict:
    """Time `steps` steps of one configuration after `warmup` untimed ones; report peak memory."""
    import torch

    from dcanas.constraint import Budget, Constraint
    from dcanas.spaces.darts.cost import build_cost_table
    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import BilevelStep, build_supernet
    from dcanas.spaces.darts.genotype import GENOTYPES
    from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for

    torch.manual_seed(0)
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    base_mb = peak_rss_mb()
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    spec = dict(CONFIGS[name])
    if spec.pop("child", False):
        setting = eval_setting_for("cifar10", cells=8, channels=16, auxiliary=False)
        net = EvalNetwork(GENOTYPES.get("DARTS_V2"), setting).to(device)
        opt = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    else:
        use_constraint = spec.pop("constraint", False)
        config = SearchConfig(**spec, amp=False)
        model = build_supernet(config, 3, 10).to(device)
        constraint = None
        if use_constraint:
            table = build_cost_table(eval_setting_for("cifar10"))
            constraint = Constraint(table, [Budget("params", 2.0e6)], "derived", device=device)
        stepper = BilevelStep(model, config, constraint, device)

        def step() -> None:
            stepper.alpha_step(x, y)
            stepper.weight_step(x, y)
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb() - base_mb
    return {"config": name, "batch": batch, "seconds_per_step": seconds, "peak_mb": peak,
            "memory": "CUDA max allocated" if cuda else "peak RSS above the interpreter's"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch default)")
    parser.add_argument("--only", nargs="*", help="substrings of configuration names to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(worker(args.worker, args.batch[0], args.steps, args.warmup, args.device)))
        return
    names = [n for n in CONFIGS if not args.only or any(o in n for o in args.only)]
    rows = []
    for batch in args.batch:
        for name in names:
            cmd = [sys.executable, __file__, "--worker", name, "--batch", str(batch), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--device", args.device, "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                sys.exit(f"{name} at batch {batch} failed:\n{out.stderr}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            if not args.json:
                print(f"  measured {name} @ batch {batch}: {rows[-1]['seconds_per_step']:.3f} s/step", file=sys.stderr)
    for batch in args.batch:
        group = [r for r in rows if r["batch"] == batch]
        plain = next((r for r in group if r["config"].startswith("plain")), None)
        child = next((r for r in group if r["config"].startswith("child")), None)
        for r in group:
            r["speedup_vs_plain"] = plain["seconds_per_step"] / r["seconds_per_step"] if plain else None
            r["x_child_step"] = r["seconds_per_step"] / child["seconds_per_step"] if child else None
    if args.json:
        print(json.dumps({"device": args.device, "steps": args.steps, "rows": rows}))
        return
    print(f"\nsearch step = alpha step + weight step, 32x32x3 input, 8 cells x 16 channels, device {args.device}, "
          f"{args.steps} timed steps after {args.warmup} warm-up; memory: {rows[0]['memory']}")
    print("| batch | configuration | s/step | speed-up vs plain DARTS | x child step | peak MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        sp = f"{r['speedup_vs_plain']:.1f}x" if r["speedup_vs_plain"] else "-"
        xc = f"{r['x_child_step']:.2f}" if r["x_child_step"] else "-"
        print(f"| {r['batch']} | {r['config']} | {r['seconds_per_step']:.3f} | {sp} | {xc} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
