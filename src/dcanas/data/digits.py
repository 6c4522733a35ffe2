"""scikit-learn's 8×8 handwritten digits: the built-in dataset that needs no files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .dataset import DatasetInfo, ImageDataset, register_dataset

# No test split ships with the data: hold out 20 % of each class (sklearn's stratified split,
# random_state 0), so every run, machine and version of dcanas sees the same 1437/360 split.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@register_dataset(DatasetInfo(
    "digits", "scikit-learn handwritten digits, 8x8 grey, 10 classes, 1437/360 (built in)",
    # The README's first command: a search and a training that finish in a minute or two on a laptop
    # CPU (the paper's settings are for a V100). Cutout 16 would blank most of an 8x8 digit.
    search_preset={"epochs": 15, "batch_size": 64, "arch_lr": 3e-3, "lr": 0.1},
    train_preset={"epochs": 15, "batch_size": 64, "lr": 0.05, "cutout": 3, "drop_path": 0.1},
    default_budget={"max_params": 200_000},
))
def load_digits_dataset(data_dir: Path | None, download: bool, image_size: int | None) -> ImageDataset:
    """The 1797 8×8 digits (values 0..16 scaled to 0..255), split 80/20 per class."""
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # N×1×8×8
    labels = bunch.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return ImageDataset.from_tensors(
        "digits",
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
        [str(d) for d in range(10)],
    )
