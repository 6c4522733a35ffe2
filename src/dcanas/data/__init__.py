"""Datasets as device-resident tensors: one loader per format, a registry, batches and augmentation.

`load_dataset(name, data_dir)` is the one entry point; `DATASETS` lists the names it accepts.
"""
from .augment import Augment, default_augment
from .dataset import DATASETS, ImageDataset, dataset_info, dataset_table, load_dataset
from .loader import BatchLoader, BatchPlan, balanced_indices, split_indices

# Importing the format modules registers their loaders, in the order `dcanas datasets` lists them.
from . import digits, idx, cifar, imagefolder, synthetic, tinyimagenet  # noqa: E402,F401  isort: skip

__all__ = [
    "DATASETS",
    "Augment",
    "BatchLoader",
    "BatchPlan",
    "balanced_indices",
    "ImageDataset",
    "dataset_info",
    "dataset_table",
    "default_augment",
    "load_dataset",
    "split_indices",
]
