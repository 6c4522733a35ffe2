"""The public Python API: docs/api.md's example runs as written; the functions log instead of printing."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch

import dcanas
from dcanas.spaces.darts.network import eval_setting_for
from dcanas.errors import ConfigError, DcanasError
from dcanas.spaces.darts.genotype import GENOTYPES

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_package_exports_the_api():
    for name in ("search", "resume_search", "train", "create_model", "load_model", "count", "DcanasError",
                 "Genotype", "__version__"):
        assert name in dcanas.__all__ and hasattr(dcanas, name)
    assert callable(dcanas.search) and callable(dcanas.train)
    assert (Path(dcanas.__file__).parent / "py.typed").is_file()


def test_docs_example_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(API_DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert "DARTS_V2: 3,349,342 params" in capsys.readouterr().out
    assert (tmp_path / "runs" / "api-train" / "model.pt").is_file()


def test_count_matches_the_command_line_and_published_figures(capsys):
    from dcanas.cli import main

    cost = dcanas.count("DARTS_V2", dataset="cifar10")
    assert cost.params == 3_349_342 and cost.params_with_aux > cost.params  # the DARTS paper's 3.3M
    assert dcanas.count("DARTS_V2", dataset="cifar100").params == 3_401_272
    genotype = dcanas.Genotype(*GENOTYPES.get("DARTS_V2"))  # a Genotype object works as well as a name
    narrow = dcanas.count(genotype, dataset="cifar10", channels=16, cells=8)
    assert main(["count", "DARTS_V2", "--channels", "16", "--cells", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == narrow.params < cost.params


def test_a_dataset_without_a_preset_needs_its_shape():
    with pytest.raises(ConfigError, match="'cifr10' has no published setting"):
        dcanas.count("DARTS_V2", dataset="cifr10")  # a typo must not count the CIFAR-10 network silently
    with pytest.raises(ConfigError, match="in_channels, image_size, num_classes"):
        dcanas.create_model("DARTS_V2", dataset="my-photos", image_size=64)
    own = dcanas.count("DARTS_V2", dataset="my-photos", in_channels=1, image_size=28, num_classes=10, cells=8,
                       channels=16)
    assert own.params == dcanas.count("DARTS_V2", dataset="fashion-mnist", cells=8, channels=16).params == 245_242
    assert dcanas.count("DARTS_V2", dataset="CIFAR10").params == 3_349_342  # preset names ignore case


def test_tinyimagenet_counts_the_papers_20_cell_network_at_64_px():
    """The appendix trains every dataset smaller than ImageNet-1k on the 20-cell, 36-channel network: TinyImageNet's
    count differs from CIFAR-10's only by the classifier's 190 extra classes (576 features + bias each)."""
    tiny = dcanas.count("DARTS_V2", dataset="tinyimagenet")
    assert tiny.params == 3_349_342 + 577 * 190
    net = dcanas.create_model("DARTS_V2", dataset="tinyimagenet")
    assert (net.setting.num_classes, net.setting.image_size, net.setting.cells) == (200, 64, 20)
    # resized to 224 px it takes the ImageNet stem, as it did before it had a preset
    assert eval_setting_for("tinyimagenet", image_size=224).style == "imagenet"


def test_create_model_builds_the_requested_setting():
    net = dcanas.create_model("PC_DARTS", dataset="digits", cells=5, channels=8)
    assert isinstance(net, torch.nn.Module) and net.setting.cells == 5 and net.setting.channels == 8
    assert net.eval()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert sum(p.numel() for n, p in net.named_parameters() if "auxiliary" not in n) == \
        dcanas.count("PC_DARTS", dataset="digits", cells=5, channels=8).params


def test_search_logs_through_the_dcanas_logger(tmp_path):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("dcanas")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        dcanas.search("digits", max_params=150_000, epochs=1, max_steps=2, progress=True, run_dir=tmp_path / "r")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert any(r.getMessage().startswith("epoch 1:") for r in records)


@pytest.mark.parametrize("options, message", [
    ({"max_params": "lots"}, "max_params"),
    ({"max_params": [1]}, "max_params must be a number"),
    ({"no_such_option": 1}, "unknown search option"),
])
def test_bad_options_raise_our_error(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        dcanas.search("digits", run_dir=tmp_path / "r", progress=False, **options)
    assert not (tmp_path / "r").exists()


def test_load_model_of_a_missing_file_is_our_error(tmp_path):
    with pytest.raises(DcanasError):
        dcanas.load_model(tmp_path / "model.pt")
