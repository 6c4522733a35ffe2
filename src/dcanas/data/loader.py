"""Device-resident batches with stateless randomness, and the search's train/val split.

Every random choice is a function of (seed, epoch, batch index) only, so a run resumed at
(epoch, batch) sees exactly the batches an uninterrupted run would have seen, and every rank of
a data-parallel job computes the same global batch and takes its own rows of it.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError
from .augment import Augment

_PERMUTATION, _AUGMENT = 0, 1  # stream ids, so the two never share a seed


def stateless_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a hash of `keys` (e.g. seed, epoch, batch)."""
    seed = int(np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)


def split_indices(n: int, fraction: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle range(n) with `seed` and cut it: `fraction` of the indices first, the rest second."""
    n_train = round(n * fraction)
    if not 0 < n_train < n:
        raise ConfigError(f"train fraction {fraction} of {n} images leaves one of the two halves empty")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:n_train], order[n_train:]


def balanced_indices(y: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of `size` of the labels `y`, drawn with `seed`, as evenly over the classes as their counts allow."""
    n = len(y)
    classes = torch.unique(y)
    if not len(classes) <= size <= n:
        raise ConfigError(f"a training subset must hold between {len(classes)} (one per class) and {n} images "
                          f"(the training set), not {size}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    # rank each image within its class in the shuffled order; taking the lowest ranks first
    # fills every class in turn, so classes stay balanced until the small ones run out
    shuffled = y[order]
    rank = torch.empty(n, dtype=torch.long)
    for c in classes:
        members = (shuffled == c).nonzero().squeeze(1)
        rank[members] = torch.arange(len(members))
    keep = order[torch.sort(rank * n + torch.arange(n), stable=True).indices[:size]]
    return keep[torch.randperm(size, generator=generator)]


class BatchPlan:
    """Which samples make up each global batch of an epoch, and which rows of it are this rank's.

    `batch_size` is the global batch: with world_size > 1 each rank gets its contiguous
    batch_size // world_size rows of every global batch, so results do not depend on world size.
    Subclasses say how a batch's samples become tensors (`epoch`).
    """

    def __init__(self, num_items: int, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
                 device: str | torch.device, rank: int, world_size: int) -> None:
        if batch_size < 1 or batch_size % world_size:
            raise ConfigError(f"batch size {batch_size} must be a positive multiple of the world size {world_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside the world size {world_size}")
        self.num_items = num_items
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        """Global batches per epoch."""
        n = self.num_items
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples per epoch over all ranks together (fewer than N with drop_last)."""
        return len(self) * self.batch_size if self.drop_last else self.num_items

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the samples in `epoch` (the same on every rank)."""
        if not self.shuffle:
            return torch.arange(self.num_items, device=self.device)
        order = torch.randperm(self.num_items, generator=stateless_generator(self.seed, epoch, _PERMUTATION))
        return order.to(self.device)

    def global_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        """(batch number, sample indices) of each global batch of `epoch` from `start_batch` on."""
        order = self.permutation(epoch)
        for b in range(start_batch, len(self)):
            yield b, order[b * self.batch_size : (b + 1) * self.batch_size]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (x, y) batches of `epoch`, starting at global batch `start_batch`."""
        raise NotImplementedError

    def _shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous rows [start, stop) of an n-row global batch.

        Full batches split into equal shards; a last, shorter batch is shared as evenly as it can.
        """
        share, extra = divmod(n, self.world_size)
        start = self.rank * share + min(self.rank, extra)
        return start, start + share + (self.rank < extra)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epoch 0 (for evaluation loops that do not count epochs)."""
        return self.epoch(0)


def normaliser(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with x_uint8 * scale - shift = (x / 255 - mean) / std, as one multiply-add."""
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * std_t), mean_t / std_t


class BatchLoader(BatchPlan):
    """Yields normalised (and optionally augmented) float batches from uint8 images kept on `device`."""

    def __init__(
        self,
        x_uint8: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        shuffle: bool = True,
        augment: Augment | None = None,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(len(x_uint8), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, device=device,
                         rank=rank, world_size=world_size)
        if len(x_uint8) != len(y) or x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
            raise ConfigError("BatchLoader needs uint8 N×C×H×W images and N labels")
        if len(mean) != x_uint8.shape[1] or len(std) != x_uint8.shape[1]:
            raise ConfigError(f"mean/std have {len(mean)}/{len(std)} values for {x_uint8.shape[1]} channels")
        self.x = x_uint8.to(self.device)
        self.y = y.to(self.device, torch.int64)
        self.augment = augment if augment is not None and augment.active else None
        self._scale, self._shift = normaliser(mean, std, self.device)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (x, y) batches of `epoch`, starting at global batch `start_batch`."""
        for b, batch in self.global_batches(epoch, start_batch):
            start, stop = self._shard(len(batch))
            rows = batch[start:stop]
            x = self.x[rows].float().mul_(self._scale).sub_(self._shift)
            if self.augment is not None:
                g = stateless_generator(self.seed, epoch, b, _AUGMENT)
                params = self.augment.sample(len(batch), x.shape[2], x.shape[3], g)
                x = self.augment.apply(x, params[start:stop])
            yield x, self.y[rows]
