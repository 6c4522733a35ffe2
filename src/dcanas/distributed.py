"""Data-parallel helpers shared by every command that may run under `torchrun`.

`torchrun` (or any launcher that sets WORLD_SIZE, RANK and LOCAL_RANK) starts one process per
device; `init_distributed()` joins them into a process group (NCCL on CUDA, Gloo on CPU). Without
those variables everything degrades to one process, so callers never branch on "am I distributed".
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

from .errors import ConfigError, DcanasError
from .runs import pick_device

_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """Whether this process was started by a distributed launcher (WORLD_SIZE/RANK set)."""
    return all(name in os.environ for name in ("WORLD_SIZE", "RANK"))


def init_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; return (rank, world_size, this process's device).

    `device` is 'auto', 'cpu' or 'cuda': under torchrun, CUDA processes take GPU LOCAL_RANK. Calling
    it again in the same process returns the existing group's values.
    """
    if not launched_by_torchrun():
        return 0, 1, pick_device(device)
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError(f"{', '.join(_ENV)} must be integers, got "
                          f"{[os.environ.get(n) for n in _ENV]}") from None
    base = pick_device(device)
    if base.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) here; "
                              f"start at most that many processes per node")
        this_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(this_device)
        backend = "nccl"
    else:
        this_device = base
        backend = "gloo"
    if not dist.is_initialized():  # also at world size 1, so one-process torchrun runs take the same path
        # device_id binds NCCL to this GPU at once (no guessing from the current device later).
        extra: dict[str, Any] = {"device_id": this_device} if backend == "nccl" else {}
        dist.init_process_group(backend, rank=rank, world_size=world_size, **extra)
    return rank, world_size, this_device


def is_distributed() -> bool:
    """Whether a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files, logs and progress bars (rank 0)."""
    return rank() == 0


def is_launch_rank_0() -> bool:
    """Rank 0 of this launch, known before the process group exists (torchrun sets RANK)."""
    return os.environ.get("RANK", "0") == "0"


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes (a new tensor; the input is untouched)."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `tensor` over all processes."""
    return all_reduce_sum(tensor) / world_size()


def any_process(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every process when `flag` is true on any (e.g. a stop request seen by one rank)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace every parameter's .grad by its mean over all processes, in one all-reduce of a flat buffer.

    For graphs that change from step to step (a search supernet's derived cells) where DDP's bucketing
    does not fit. A missing gradient counts as zeros in the mean; a parameter without a gradient on every
    process keeps None, so the optimiser skips it (no weight decay, no momentum) exactly as one process would.
    """
    if not is_distributed():
        return
    params = list(params)
    if not params:
        return
    grads = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
    has_grad = params[0].new_tensor([p.grad is not None for p in params], dtype=grads[0].dtype)
    flat = torch.cat([*grads, has_grad])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    sums, has_grad = flat[:-len(params)], flat[-len(params):].tolist()
    for p, g, used in zip(params, sums.split([p.numel() for p in params]), has_grad):
        p.grad = g.view_as(p).to(p.dtype) if used > 0 else None


def on_main(fn: Callable[[], Any]) -> Any:
    """Run `fn` on rank 0 only; every process gets its result, or raises the user error it raised
    (so a refused run folder stops every process instead of leaving the others waiting)."""
    value, error = None, None
    if is_main():
        try:
            value = fn()
        except DcanasError as exc:
            error = exc
    value, error = broadcast_object((value, error))
    if error is not None:
        raise error
    return value


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` from process `src`, on every process (picklable objects only)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
