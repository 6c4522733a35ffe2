"""Batched augmentation on normalised float tensors: random crop with padding, flip, cutout.

Random choices are drawn for a whole batch at once (`Augment.sample`) and applied without a
Python loop over images (`Augment.apply`). Keeping the two apart lets a data-parallel rank draw
the choices of the global batch and apply only its own rows, so results do not depend on the
number of ranks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dataset import dataset_info

# Columns of the parameter tensor that `sample` returns.
CROP_Y, CROP_X, FLIP, CUT_Y, CUT_X = range(5)


@dataclass
class Augment:
    """Random crop after zero padding, horizontal flip and cutout (DeVries & Taylor), per image."""

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    def sample(self, n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """Random choices for n images as an (n, 5) int64 CPU tensor (see the column constants)."""
        crop = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=generator)
        flip = torch.randint(0, 2, (n, 1), generator=generator)
        centre_y = torch.randint(0, height, (n, 1), generator=generator)
        centre_x = torch.randint(0, width, (n, 1), generator=generator)
        return torch.cat([crop, flip, centre_y, centre_x], dim=1)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Augment a normalised N×C×H×W float batch with `sample`'s choices (on x's device)."""
        params = params.to(x.device)
        n, c, h, w = x.shape
        if self.crop_padding:
            p = self.crop_padding
            # Zero padding after normalisation pads with the dataset mean, as DARTS does.
            padded = F.pad(x, (p, p, p, p))
            rows = params[:, CROP_Y, None] + torch.arange(h, device=x.device)  # n×h
            cols = params[:, CROP_X, None] + torch.arange(w, device=x.device)  # n×w
            index = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
            x = padded.flatten(2).gather(2, index).view(n, c, h, w)
        if self.flip:
            x = torch.where(params[:, FLIP].bool().view(n, 1, 1, 1), x.flip(3), x)
        if self.cutout:
            top = params[:, CUT_Y, None] - self.cutout // 2
            left = params[:, CUT_X, None] - self.cutout // 2
            ys = torch.arange(h, device=x.device)
            xs = torch.arange(w, device=x.device)
            in_rows = (ys >= top) & (ys < top + self.cutout)  # n×h; the square is clipped at borders
            in_cols = (xs >= left) & (xs < left + self.cutout)  # n×w
            x = x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1), 0.0)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch with fresh random choices drawn from `generator` (a CPU generator)."""
        return self.apply(x, self.sample(len(x), x.shape[2], x.shape[3], generator))

    @property
    def active(self) -> bool:
        """Whether this augmentation changes anything."""
        return bool(self.crop_padding or self.flip or self.cutout)


def default_augment(dataset_name: str, image_size: int, cutout: int = 0) -> Augment:
    """The usual augmentation: pad-and-crop by size/8 (4 px at 32 px), flips for natural images."""
    return Augment(
        crop_padding=max(1, round(image_size / 8)),
        flip=dataset_info(dataset_name).flip,
        cutout=cutout,
    )
