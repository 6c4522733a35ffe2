"""The scaffolding every training-style loop shares, written once: `Run`.

A loop (search_loop, train_loop) says what to do with a batch and what to record at an epoch's end;
`Run` owns the rest: the epoch/step/step-count/seconds counters, resuming them (and the RNG) from a
checkpoint, the per-epoch progress bar, the clean stop on SIGINT/SIGTERM (every process stops at the same
step), --max-steps, checkpoints at every epoch end, on a stop and by the clock mid-epoch, the non-finite
loss stop, and the metrics CSV. A checkpoint is the loop's own entries (`state`: model, step objects'
`state_dict`s, history, ...) plus the counters, the RNG state and the epoch's running sums.

    run = Run(run_dir, checkpoint, state=lambda: {...}, totals=running.total, ...)
    for epoch in run.epochs():
        for step, batch in run.steps(epoch, batches):
            ...one step...
        totals = run.end_epoch(epoch)   # stop / divergence handled here
        ...evaluate, record...
        run.epoch_done(epoch, metrics_row, empty_totals)
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from tqdm.auto import tqdm

from . import distributed as dist_utils
from .checks import check_finite_loss
from .runs import CHECKPOINT, MetricsLog, rng_state, save_checkpoint, set_rng_state, stop_on_signals

CHECKPOINT_EVERY_S = 600.0  # mid-epoch checkpoints by the clock: a crash loses minutes, not a CIFAR-size epoch


class Run:
    """Counters, checkpoints, signals, progress, max-steps and metrics of one resumable loop."""

    def __init__(self, run_dir: Path, checkpoint: dict | None, *, state: Callable[[], dict],
                 totals: Callable[[], Any], finite: Callable[[Any], float], epochs: int, steps_per_epoch: int,
                 max_steps: int | None, label: str, device: torch.device, main: bool, progress: bool,
                 world_size: int, stop_check_every: int = 1,
                 postfix: Callable[[int], dict[str, str] | None] | None = None,
                 saved_totals: Callable[[Any], Any] = lambda totals: totals):
        self.run_dir = Path(run_dir)
        self.state, self.totals, self.finite, self.postfix = state, totals, finite, postfix
        self.saved_totals = saved_totals  # the running sums as a checkpoint stores them
        self.epochs_planned, self.steps_per_epoch, self.max_steps = epochs, steps_per_epoch, max_steps
        self.label, self.device, self.main, self.progress = label, device, main, progress
        self.world_size, self.stop_check_every = world_size, stop_check_every  # collective checks' cadence
        self.start_epoch = self.start_step = self.total_steps = 0
        self.seconds = 0.0
        if checkpoint is not None:
            set_rng_state(checkpoint["rng"])
            self.start_epoch, self.start_step = checkpoint["epoch"], checkpoint["step"]
            self.total_steps, self.seconds = checkpoint["total_steps"], checkpoint["seconds"]
        self.metrics = (MetricsLog(self.run_dir / "metrics.csv",
                                   keep_epochs=self.start_epoch if checkpoint is not None else None)
                        if main else None)
        self._stop_request = None
        self._stop = False
        self._next_step = 0

    @property
    def at_max_steps(self) -> bool:
        """Whether --max-steps has been reached."""
        return self.max_steps is not None and self.total_steps >= self.max_steps

    def epochs(self) -> Iterator[int]:
        """The epochs still to run; signals request a clean stop meanwhile; --max-steps ends early."""
        try:
            with stop_on_signals() as self._stop_request:
                for epoch in range(self.start_epoch, self.epochs_planned):
                    # resumed at --max-steps on an epoch's boundary: nothing left; mid-epoch, the epoch still ends
                    # (evaluation, metrics row) with no further step (see steps())
                    if self.at_max_steps and (epoch > self.start_epoch or self.start_step == 0):
                        break
                    yield epoch
        finally:
            if self.metrics is not None:
                self.metrics.close()

    def steps(self, epoch: int, batches: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """(step, batch) for the rest of `epoch`, with the progress bar, stop checks and timed checkpoints."""
        bar = tqdm(total=self.steps_per_epoch, initial=self.start_step,
                   desc=f"{self.label} {epoch + 1}/{self.epochs_planned}", disable=not self.progress, leave=False,
                   dynamic_ncols=True)
        t0 = last_saved = time.perf_counter()
        step, self._stop = self.start_step - 1, False
        try:
            for index, batch in enumerate(batches, start=self.start_step):
                if self.at_max_steps:  # a run resumed mid-epoch at --max-steps takes no further step
                    break
                step = index
                yield step, batch
                self.total_steps += 1
                bar.update(1)
                if self.progress and self.postfix is not None and (postfix := self.postfix(step)):
                    bar.set_postfix(**postfix)
                # every process stops at the same step (a signal may reach only one): the checks are collective,
                # so a multi-process run makes them every `stop_check_every` steps, not every step
                collective = self.world_size == 1 or (step + 1) % self.stop_check_every == 0
                if collective:
                    self._stop = dist_utils.any_process(bool(self._stop_request), self.device)
                if self._stop or self.at_max_steps:
                    break
                if collective and dist_utils.any_process(time.perf_counter() - last_saved > CHECKPOINT_EVERY_S,
                                                         self.device):
                    partial = self.totals()
                    self.seconds += time.perf_counter() - t0  # the time so far goes into the checkpoint
                    t0 = last_saved = time.perf_counter()
                    self.save(epoch, step + 1, partial)
        finally:
            bar.close()
        self.seconds += time.perf_counter() - t0
        self._next_step = step + 1

    def end_epoch(self, epoch: int, what: str) -> Any:
        """The epoch's running sums over all processes; stops (checkpoint kept) on a signal or a non-finite loss."""
        totals = self.totals()
        # every process holds the same sums, so all stop together; the last checkpoint stays as it was
        check_finite_loss(self.finite(totals), what, f"in epoch {epoch + 1}")
        if self._stop:
            self.save(epoch, self._next_step, totals)
            if self.metrics is not None:
                self.metrics.close()
            dist_utils.barrier()  # no process exits (and has torchrun stop the others) before the checkpoint
            signal = getattr(self._stop_request, "signal", None)
            raise KeyboardInterrupt(f"stopped by signal {signal or 'on another process'}; "
                                    f"resume with --resume {self.run_dir}")
        self.start_step = 0
        return totals

    def epoch_done(self, epoch: int, metrics_row: dict[str, Any], empty_totals: Any) -> None:
        """Append the epoch's metrics row and checkpoint at the start of the next epoch."""
        if self.metrics is not None:
            self.metrics.append(metrics_row)
        self.save(epoch + 1, 0, empty_totals)

    def save(self, epoch: int, step: int, totals: Any) -> None:
        """The checkpoint (rank 0 writes): the loop's entries, the counters, the RNG and the running sums."""
        if self.main:
            save_checkpoint(self.run_dir / CHECKPOINT, {
                **self.state(), "rng": rng_state(), "epoch": epoch, "step": step, "total_steps": self.total_steps,
                "seconds": self.seconds, "running": self.saved_totals(totals),
                "world_size": self.world_size})
