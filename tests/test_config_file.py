"""--config FILE: a run's saved config.json reruns it exactly; options typed beside it override it; a file
with options the command does not take is one line, exit 2."""
from __future__ import annotations

import json

import pytest

from dcanas.cli import main

TINY_SEARCH = ["--max-steps", "3", "--epochs", "1", "--quiet", "--json"]


def test_search_reruns_from_its_config(tmp_path, capsys):
    assert main(["search", *TINY_SEARCH, "--max-params", "150K", "--seed", "3", "--run-dir", str(tmp_path / "a")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["search", "--config", str(tmp_path / "a" / "config.json"), "--quiet", "--json",
                 "--run-dir", str(tmp_path / "b")]) == 0
    again = json.loads(capsys.readouterr().out)
    saved = [json.loads((tmp_path / d / "config.json").read_text()) for d in "ab"]
    assert saved[0] == saved[1] and saved[0]["seed"] == 3 and saved[0]["max_params"] == 150_000
    assert again["genotype"] == first["genotype"] and again["params"] == first["params"]
    # typed options win over the file
    assert main(["search", "--config", str(tmp_path / "a" / "config.json"), "--max-params", "120K", "--quiet",
                 "--json", "--run-dir", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "c" / "config.json").read_text())["max_params"] == 120_000


def test_train_reruns_from_its_config(tmp_path, capsys):
    argv = ["train", "DARTS_V2", "--dataset", "digits", "--cells", "5", "--channels", "8", "--epochs", "1",
            "--max-steps", "3", "--quiet", "--json"]
    assert main([*argv, "--run-dir", str(tmp_path / "a")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--quiet", "--json",
                 "--run-dir", str(tmp_path / "b")]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_acc"] == first["test_acc"] and again["params"] == first["params"]


@pytest.mark.parametrize("content, needle", [
    ('{"epochs": 1, "warp_drive": true}', "does not take: warp_drive"),
    ("[1, 2]", "must hold one object"),
    ("{not json", "is not valid JSON"),
    # values of the wrong type: one line naming the option, never a TypeError from deep inside the run
    ('{"dataset": "digits", "epochs": "ten"}', 'epochs must be an integer, got "ten"'),
    ('{"batch_size": "64"}', 'batch_size must be an integer, got "64"'),
    ('{"epochs": true}', "epochs must be an integer, got true"),
    ('{"arch_betas": 0.5}', "arch_betas must be a list of 2 numbers, got 0.5"),
    ('{"search_budgets": {"params": "x"}}', "search_budgets must be an object of numbers"),
    ('{"repair": "yes"}', 'repair must be true or false, got "yes"'),
    ('{"data_dir": 7}', "data_dir must be text or null, got 7"),
    (('train', '{"genotype": "DARTS_V2", "val_fraction": "0.1"}'), 'val_fraction must be a number, got "0.1"'),
])
def test_a_bad_config_file_is_one_line(tmp_path, capsys, content, needle):
    command, content = content if isinstance(content, tuple) else ("search", content)
    path = tmp_path / "config.json"
    path.write_text(content)
    assert main([command, "--config", str(path), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dcanas: error:") and "\n" not in err and needle in err
    assert not (tmp_path / "r").exists()


def test_a_typed_dataset_wins_over_the_files(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"dataset": "digits", "epochs": 1, "max_params": None}))
    assert main(["search", "--config", str(path), "--dataset", "synthetic", "--unconstrained", "--dry-run",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"]["name"] == "synthetic"


def test_a_yaml_number_without_a_dot_is_a_number(tmp_path, capsys):
    """YAML 1.1 (PyYAML) reads `1e-3` as text; a number-typed option takes it as the number it means."""
    pytest.importorskip("yaml")
    path = tmp_path / "config.yaml"
    path.write_text("arch_lr: 6e-4\nmax_params: 150000\nepochs: 1\n")
    assert main(["search", "--config", str(path), "--max-steps", "1", "--quiet", "--run-dir", str(tmp_path / "r")]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["arch_lr"] == 6e-4 and saved["max_params"] == 150_000
    path.write_text("epochs: 1e1\n")  # an integer option still wants an integer
    assert main(["search", "--config", str(path), "--run-dir", str(tmp_path / "r2")]) == 2
    assert 'epochs must be an integer, got "1e1"' in capsys.readouterr().err
