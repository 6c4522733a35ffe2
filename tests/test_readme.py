"""The README as a newcomer reads it: every `dcanas` command in it parses as written, and the ones that need
no downloaded data or GPU run as written (with a step cap so the suite stays quick)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dcanas.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """Every `dcanas ...` line of the README's bash blocks, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            line = re.split(r"\s{2,}#", line)[0].strip()  # the README aligns its comments after two spaces
            if line.startswith("dcanas "):
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def argv_of(command: str, run_dir: Path) -> list[str]:
    """The command's arguments with the README's placeholders filled in."""
    text = command.replace("runs/<id>", str(run_dir)).replace("runs/<train-id>", str(run_dir))
    text = text.replace("runs/<lug>/lug.json", str(run_dir / "lug.json")).replace("~/data", str(run_dir / "data"))
    return shlex.split(text)[1:]


def test_the_readme_has_commands():
    assert len(COMMANDS) >= 15 and COMMANDS[0] == "dcanas search"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses(command, tmp_path):
    args = build_parser().parse_args(argv_of(command, tmp_path))  # an unknown or drifted option exits here
    assert callable(args.handler)


# Commands that run here as written: the built-in digits set, the count and data listings.
RUNNABLE = [c for c in COMMANDS if (c.split()[1] in ("count", "datasets", "random-cell") and "runs/<" not in c)
            or (c.split()[1] == "search" and not {"--dataset", "--lug", "--resume", "--config"} & set(c.split()))]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A finished digits search, for the commands that take a run folder."""
    run_dir = tmp_path_factory.mktemp("readme") / "search"
    assert main(["search", "--max-steps", "2", "--epochs", "1", "--quiet", "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.parametrize("command", RUNNABLE)
def test_readme_commands_run_as_written(command, tmp_path, capsys):
    argv = argv_of(command, tmp_path)
    if argv[0] == "search":
        argv += ["--max-steps", "2", "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "run")]
        if "--repeats" in argv:
            argv += ["--repeat-jobs", "1"]
        if "--derive-by" in argv:  # score the perturbations on fewer held-out images (CI time)
            argv += ["--derive-images", "32"]
    assert main(argv) == 0, capsys.readouterr().err


def test_readme_train_and_export_of_a_search_run(searched, tmp_path, capsys):
    train = next(c for c in COMMANDS if c == "dcanas train runs/<id>")
    argv = argv_of(train, searched) + ["--max-steps", "2", "--epochs", "1", "--quiet", "--run-dir",
                                       str(tmp_path / "train")]
    assert main(argv) == 0, capsys.readouterr().err
    export = next(c for c in COMMANDS if c.startswith("dcanas export runs/<train-id>"))
    pytest.importorskip("onnxruntime")
    argv = argv_of(export, tmp_path / "train")
    outputs = [a for a in argv if a.startswith("model.")]  # written where the user stands: here, into tmp_path
    argv = [str(tmp_path / a) if a in outputs else a for a in argv]
    assert main(argv) == 0, capsys.readouterr().err
    assert outputs and all((tmp_path / name).is_file() for name in outputs)


def test_readme_count_of_a_search_run(searched, tmp_path, capsys):
    import json

    count = next(c for c in COMMANDS if c == "dcanas count runs/<id>")
    capsys.readouterr()
    assert main(argv_of(count, searched) + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == json.loads((searched / "result.json").read_text())["params"]


def test_the_main_job_says_what_to_run_next(tmp_path, capsys):
    assert main(["search", "--max-steps", "2", "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"dcanas train {tmp_path / 'r'}" in out and "e+0" not in out  # no 1.38957e+06 for people to decode
    assert re.search(r"network\s+\d+ cells x \d+ channels", out)
    # a cell picture and the alpha heatmaps exist with or without graphviz (matplotlib draws the cells then)
    assert all((tmp_path / "r" / name).is_file() for name in ("cell_normal.png", "cell_reduce.png", "alphas.png"))


def test_readme_rerun_from_a_saved_config(searched, tmp_path, capsys):
    command = next(c for c in COMMANDS if "--config" in c)
    argv = argv_of(command, searched) + ["--quiet", "--run-dir", str(tmp_path / "again")]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "again" / "result.json").is_file()
