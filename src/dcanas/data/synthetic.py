"""Random class-dependent images for smoke tests: learnable, instant, no files."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .dataset import DatasetInfo, ImageDataset, register_dataset


@register_dataset(DatasetInfo("synthetic", "random images with class-dependent patterns, for smoke tests (built in)",
                             train_preset={"epochs": 10, "batch_size": 64, "lr": 0.05}))
def load_synthetic(
    data_dir: Path | None,
    download: bool,
    image_size: int | None,
    *,
    channels: int = 3,
    classes: int = 10,
    train_size: int = 512,
    test_size: int = 128,
    seed: int = 0,
) -> ImageDataset:
    """Each class has a smooth random template; an image is its class template plus noise."""
    size = 32 if image_size is None else image_size
    if min(size, channels, classes, train_size, test_size) < 1:
        raise ConfigError("synthetic: image_size, channels, classes, train_size and test_size must be positive")
    g = torch.Generator().manual_seed(seed)
    # Low-resolution templates upsampled: a pattern a small CNN learns within a few steps.
    coarse = torch.rand((classes, channels, 4, 4), generator=g)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        noise = torch.rand((n, channels, size, size), generator=g)
        x = (0.6 * templates[y] + 0.4 * noise) * 255
        return x.round().clamp(0, 255).to(torch.uint8), y

    train_x, train_y = sample(train_size)
    test_x, test_y = sample(test_size)
    names = [f"class{i}" for i in range(classes)]
    return ImageDataset.from_tensors("synthetic", train_x, train_y, test_x, test_y, names)
