"""ImageNet-style search: the supernet's stride-8 stem and the paper's ImageNet preset, scaled to the batch."""
from __future__ import annotations

import pytest
import torch

from dcanas.errors import ConfigError
from dcanas.search_config import make_search_config
from dcanas.spaces.darts.supernet import Supernet, SupernetConfig


def test_imagenet_stem_takes_224_to_28_before_the_cells():
    net = Supernet(SupernetConfig(cells=5, channels=8, num_classes=7, stem="imagenet")).eval()
    seen = []
    net.cells[0].register_forward_hook(lambda module, inputs, output: seen.extend(t.shape for t in inputs))
    logits = net(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 7)
    assert seen == [(2, 8, 56, 56), (2, 8, 28, 28)]  # s0 at 1/4 (reduced by the first cell), s1 at 1/8
    assert net.cells[0].preprocess0.__class__.__name__ == "FactorizedReduce"


def test_cifar_stem_keeps_its_checkpoint_names():
    keys = set(Supernet(SupernetConfig(cells=3, channels=8)).state_dict())
    assert {"stem.0.weight", "stem.1.running_mean"} <= keys and not any(k.startswith("stem1") for k in keys)


@pytest.mark.parametrize("batch,lr,arch_lr", [(1024, 0.5, 6e-3), (256, 0.125, 3e-3), (64, 0.03125, 1.5e-3)])
def test_imagenet_preset_scales_the_paper_rates_to_the_batch(batch, lr, arch_lr):
    config = make_search_config("imagefolder", preset="imagenet", batch_size=batch)
    assert config.search_stem == "imagenet" and config.batch_size == batch and config.epochs == 50
    assert config.lr == pytest.approx(lr) and config.arch_lr == pytest.approx(arch_lr)
    assert (config.cells, config.channels, config.eval_cells, config.eval_channels) == (8, 16, 14, 48)
    assert make_search_config("imagefolder", preset="imagenet", lr=0.1, epochs=3).lr == 0.1  # typed wins


def test_imagenet_stem_refuses_a_search_resolution_it_would_erase():
    config = make_search_config("imagefolder", preset="imagenet", search_image_size=16)
    with pytest.raises(ConfigError, match="--search-image-size 16"):
        config.validate()
    with pytest.raises(ConfigError, match="--preset must be one of imagenet"):
        make_search_config("imagefolder", preset="mobile")
