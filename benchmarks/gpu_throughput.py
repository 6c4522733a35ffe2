"""Full-size throughput on an accelerator: the paper's CIFAR-10 search step and evaluation training.

    python benchmarks/gpu_throughput.py --device cuda

Times (a) one DCA-NAS search step (alpha + weight update) at the paper's batch 512 on 32x32x3
inputs, 8 cells x 16 channels, bf16 autocast, params constraint on the 20-cell x 36-channel deployed
network, with plain first-order DARTS at the same batch for the ratio; and (b) training steps of the
20-cell x 36-channel evaluation network (DARTS_V2 genotype, auxiliary head, batch 96, bf16,
channels-last). It then extrapolates the paper's schedules: 50 search epochs over 25k/25k halves of
CIFAR-10, and 600 training epochs over 50k images.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from dcanas.constraint import Budget, Constraint
from dcanas.spaces.darts.cost import build_cost_table
from dcanas.search_config import SearchConfig
from dcanas.search_loop import BilevelStep, build_supernet
from dcanas.spaces.darts.genotype import GENOTYPES
from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for


def timed(step, steps: int, warmup: int, cuda: bool) -> float:
    """Mean seconds per call of `step` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def search_step_seconds(batch: int, savings: bool, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """(seconds per search step, peak GiB) for all savings on + constraint, or plain DARTS."""
    spec = {} if savings else dict(bottleneck=1, weight_sharing=False, derived_cells=False)
    config = SearchConfig(**spec, amp=True)
    model = build_supernet(config, 3, 10).to(device)
    constraint = None
    if savings:
        constraint = Constraint(build_cost_table(eval_setting_for("cifar10")), [Budget("params", 3.5e6)],
                                device=device)
    stepper = BilevelStep(model, config, constraint, device)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        stepper.alpha_step(x, y)
        stepper.weight_step(x, y)

    seconds = timed(step, steps, warmup, device.type == "cuda")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def train_step_seconds(batch: int, device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per training step of the 20x36 DARTS_V2 evaluation network with its auxiliary head."""
    net = EvalNetwork(GENOTYPES.get("DARTS_V2"), eval_setting_for("cifar10")).to(device)
    net = net.to(memory_format=torch.channels_last)
    net.train()
    net.drop_path_prob = 0.2
    opt = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            logits, aux = net.forward_with_aux(x)
            loss = F.cross_entropy(logits.float(), y) + 0.4 * F.cross_entropy(aux.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()

    return timed(step, steps, warmup, device.type == "cuda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--search-batch", type=int, default=512)
    parser.add_argument("--train-batch", type=int, default=96)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    ours, ours_mem = search_step_seconds(args.search_batch, True, device, args.steps, args.warmup)
    try:
        plain, plain_mem = search_step_seconds(args.search_batch, False, device, max(3, args.steps // 4), 2)
    except torch.cuda.OutOfMemoryError:  # plain DARTS at batch 512 can exceed an 80 GB card
        torch.cuda.empty_cache()
        plain, plain_mem = float("nan"), float("inf")
    train = train_step_seconds(args.train_batch, device, args.steps, args.warmup)
    search_steps = 50 * math.floor(25_000 / args.search_batch)
    train_steps = 600 * math.ceil(50_000 / args.train_batch)
    result = {
        "card": card, "torch": torch.__version__,
        "search_batch": args.search_batch, "search_s_per_step": ours, "search_peak_gib": ours_mem,
        "plain_darts_s_per_step": plain, "plain_darts_peak_gib": plain_mem, "speedup_vs_plain": plain / ours,
        "search_gpu_hours_50_epochs": search_steps * ours / 3600,
        "plain_darts_gpu_hours_50_epochs": search_steps * plain / 3600,
        "train_batch": args.train_batch, "train_s_per_step": train,
        "train_images_per_s": args.train_batch / train,
        "train_gpu_hours_600_epochs": train_steps * train / 3600,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"card: {card}, torch {torch.__version__}, bf16 autocast")
    print("| measurement | value |")
    print("|---|---|")
    print(f"| DCA-NAS search step, batch {args.search_batch} (all savings + constraint) | {ours * 1e3:.1f} ms, "
          f"peak {ours_mem:.2f} GiB |")
    print(f"| plain DARTS search step, batch {args.search_batch} | {plain * 1e3:.1f} ms, peak {plain_mem:.2f} GiB |")
    print(f"| speed-up vs plain DARTS | {plain / ours:.1f}x |")
    print(f"| 50-epoch CIFAR-10 search ({search_steps} steps), extrapolated | "
          f"{result['search_gpu_hours_50_epochs']:.3f} GPU-hours (paper: 1.37 on a V100) |")
    print(f"| evaluation training, 20 cells x 36 ch, batch {args.train_batch} | {train * 1e3:.1f} ms/step, "
          f"{result['train_images_per_s']:.0f} images/s |")
    print(f"| 600-epoch CIFAR-10 training ({train_steps} steps), extrapolated | "
          f"{result['train_gpu_hours_600_epochs']:.2f} GPU-hours |")


if __name__ == "__main__":
    main()
