"""Evaluation-phase training: it learns, resumes exactly after SIGKILL/SIGTERM, matches under DDP, checks budgets."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dcanas.cli import main as cli_main
from dcanas.spaces.darts.cost import network_cost
from dcanas.data import load_dataset
from dcanas.model_io import load_model
from dcanas.spaces.darts.genotype import GENOTYPES, genotype_to_dict
from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for
from dcanas.train_loop import TrainConfig, _build_network, eval_loader, evaluate, lr_factor, make_config

# A tiny network and short epochs: 44 steps of batch 32 per digits epoch.
TINY = ["--cells", "3", "--channels", "8", "--batch-size", "32", "--device", "cpu", "--quiet"]
# One thread per process: deterministic, and far faster than two spinning threads on a busy 2-core machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=ENV, check=False)


def _train_cmd(run_dir, *extra):
    return [sys.executable, "-m", "dcanas", "train", "DARTS_V2", *TINY, "--epochs", "2", "--seed", "1",
            "--run-dir", str(run_dir), *extra]


def _weights(run_dir):
    return load_model(run_dir)[0].state_dict()



@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full") / "run"
    out = _run(_train_cmd(run_dir, "--json"))
    assert out.returncode == 0, out.stderr
    return run_dir, json.loads(out.stdout)


def test_training_beats_the_untrained_network(uninterrupted):
    run_dir, result = uninterrupted
    net, extra = load_model(run_dir)
    setting = eval_setting_for("digits", cells=3, channels=8)
    assert net.setting == setting and result["setting"] == setting.to_dict()
    data = load_dataset("digits")
    test = eval_loader(data, "test", None, 500, torch.device("cpu"), 0, 1)
    torch.manual_seed(1)
    _, untrained = evaluate(EvalNetwork(GENOTYPES.get("DARTS_V2"), setting), test)
    _, trained = evaluate(net, test)
    assert trained == pytest.approx(result["test_acc"]) == pytest.approx(extra["metrics"]["test_acc"])
    assert untrained < 0.2 and trained > untrained + 0.5
    assert result["params"] == network_cost(GENOTYPES.get("DARTS_V2"), setting).params
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "model.pt", "learning_curves.png", "report.md",
                 "result.json"):
        assert (run_dir / name).is_file(), name
    assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 1 + 2
    assert "test accuracy" in (run_dir / "report.md").read_text()


def _wait_for_checkpoint(run_dir, proc, timeout=300):
    deadline = time.time() + timeout
    while not (run_dir / "checkpoint.pt").is_file():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "no checkpoint after the first epoch"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_interrupted_training_resumes_exactly(tmp_path, uninterrupted, sig):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for_checkpoint(run_dir, proc)
    time.sleep(0.25)  # into the second epoch (a signal is acted on after a step, so step > 0 regardless)
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    assert not (run_dir / "model.pt").exists(), "the run finished before it was killed"
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "--resume" in stderr
        assert checkpoint["epoch"] == 1 and checkpoint["step"] > 0  # written mid-epoch, on the signal
    out = _run([sys.executable, "-m", "dcanas", "train", "--quiet", "--resume", str(run_dir)])
    assert out.returncode == 0, out.stderr
    resumed, reference = _weights(run_dir), _weights(uninterrupted[0])
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert _metrics(run_dir) == _metrics(uninterrupted[0])  # one row per epoch, the resumed epoch's sums kept


def _metrics(run_dir):
    """metrics.csv rows without the wall-clock column, the one thing a resumed run may change."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_two_processes_match_one_process(tmp_path):
    # 2 processes x 1 micro-batch of 128 == 1 process x 2 micro-batches of 128: same rows, same BatchNorm
    # groups, same drop-path draws (epoch 1 has drop-path on), gradients equal up to summation order.
    common = ["DARTS_V2", *TINY[:4], "--batch-size", "256", "--epochs", "2", "--max-steps", "7", "--drop-path",
              "0.3", "--device", "cpu", "--quiet"]
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "dcanas", "train", *common, "--run-dir", str(tmp_path / "ddp")])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = _run([sys.executable, "-m", "dcanas", "train", *common, "--accum-steps", "2", "--run-dir",
                   str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr
    net_ddp, net_single = load_model(tmp_path / "ddp")[0], load_model(tmp_path / "single")[0]
    single_params = dict(net_single.named_parameters())
    drift = max((p - single_params[name]).abs().max().item() for name, p in net_ddp.named_parameters())
    assert drift < 1e-4
    moved = max((p - q).abs().max().item() for p, q in zip(net_ddp.parameters(), _initial(net_ddp).parameters()))
    assert moved > 100 * max(drift, 1e-7)  # the comparison is not vacuous: training changed the weights
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 7


def _initial(net):
    torch.manual_seed(0)
    return EvalNetwork(net.genotype, net.setting)


def test_budgets_of_a_search_run_are_rechecked(tmp_path, capsys):
    setting = eval_setting_for("digits", cells=3, channels=8)
    genotype = GENOTYPES.get("DARTS_V2")
    cost = network_cost(genotype, setting)
    search = tmp_path / "search"
    search.mkdir()
    (search / "genotype.json").write_text(json.dumps(genotype_to_dict(genotype)))
    budgets = {"params": {"limit": cost.params + 1000, "value": cost.params, "ok": True},
               "flops": {"limit": cost.flops - 1, "value": cost.flops - 1, "ok": True}}  # a stale record: recount
    (search / "result.json").write_text(json.dumps({"setting": setting.to_dict(), "budgets": budgets,
                                                    "config": {"dataset": "digits", "data_dir": None}}))
    code = cli_main(["train", str(search), "--epochs", "1", "--max-steps", "2", "--batch-size", "32", "--device",
                     "cpu", "--quiet", "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0
    assert f"budget         params: {cost.params:,} <= {cost.params + 1000:,}  ok" in out
    assert f"budget         flops: {cost.flops:,} <= {cost.flops - 1:,}  EXCEEDED" in out
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["setting"] == setting.to_dict()  # the network the search budgeted, without --cells/--channels
    assert result["budgets"]["params"]["ok"] and not result["budgets"]["flops"]["ok"] and not result["budgets_ok"]
    assert result["budgets"]["flops"]["searched_value"] == cost.flops - 1 and result["source"] == str(search)
    assert load_model(tmp_path / "run")[1]["budgets"] == result["budgets"]
    # an option that widens the searched network past its budget is refused before training, nothing written
    code = cli_main(["train", str(search), "--channels", "16", "--epochs", "1", "--quiet", "--run-dir",
                     str(tmp_path / "wide")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and not (tmp_path / "wide").exists()
    assert "with --channels 16 the network's params is" in err and "genotype.json to leave the budget behind" in err
    # a budget the search itself missed (--no-repair) is no reason to refuse an option that does not touch it
    budgets["flops"]["value"] = cost.flops
    (search / "result.json").write_text(json.dumps({"setting": setting.to_dict(), "budgets": budgets,
                                                    "config": {"dataset": "digits", "data_dir": None}}))
    assert cli_main(["train", str(search), "--no-auxiliary", "--epochs", "1", "--max-steps", "1", "--quiet",
                     "--run-dir", str(tmp_path / "noaux")]) == 0
    assert "| flops |" in (tmp_path / "run" / "report.md").read_text()


def _error(argv, capsys):
    code = cli_main(argv)
    err = capsys.readouterr().err
    return code, err


def test_user_errors_exit_2_in_one_line(tmp_path, uninterrupted, capsys):
    cases = [
        (["train", "NOT_A_GENOTYPE"], "neither a known genotype"),
        (["train", "DARTS_V2", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere")], "cifar10"),
        (["train", "DARTS_V2", "--val-fraction", "1.5"], "--val-fraction"),
        (["train", "DARTS_V2", "--select", "val"], "--val-fraction"),
        (["train", "--resume", str(tmp_path)], "nothing to resume"),
        (["train", "--resume", str(uninterrupted[0]), "--lr", "0.1"], "only"),
        (["train"], "give a genotype"),
        (["train", "DARTS_V2", "--train-subset", "5", "--batch-size", "4"], "between 10 (one per class)"),
    ]
    for argv, message in cases:
        code, err = _error(argv, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    # an existing run folder without --resume: refused by a real process, nothing in it touched
    run_dir = uninterrupted[0]
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    again = _run(_train_cmd(run_dir))
    assert again.returncode == 2 and "already holds files" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_recipe_defaults():
    cifar = make_config("DARTS_V2", dataset="cifar10")
    assert (cifar.epochs, cifar.batch_size, cifar.lr, cifar.weight_decay, cifar.cutout, cifar.drop_path,
            cifar.aux_weight, cifar.grad_clip, cifar.label_smoothing) == (600, 96, 0.025, 3e-4, 16, 0.2, 0.4, 5.0, 0)
    imagenet = make_config("DARTS_V2", dataset="imagenet", lr=0.3)
    assert (imagenet.epochs, imagenet.batch_size, imagenet.lr, imagenet.weight_decay,
            imagenet.label_smoothing) == (250, 1024, 0.3, 3e-5, 0.1)
    assert make_config("DARTS_V2", dataset="imagefolder", image_size=224).epochs == 250
    assert make_config("DARTS_V2").dataset == "digits" and TrainConfig().selection == "last"
    # cosine to zero exactly as CosineAnnealingLR, optionally after a linear warm-up
    assert [lr_factor(e, 4, 0) for e in range(5)] == pytest.approx([1, 0.8535534, 0.5, 0.1464466, 0])
    assert [lr_factor(e, 6, 2) for e in range(3)] == pytest.approx([0.5, 1.0, 1.0])


@pytest.mark.parametrize("asked, expected", [(None, True), (True, True), (False, False)])
def test_channels_last_is_the_default_on_cpu_too(asked: bool | None, expected: bool):
    # None is what configs saved before the CPU default read back as
    setting = eval_setting_for("digits", cells=3, channels=8)
    net, channels_last = _build_network(GENOTYPES.get("DARTS_V2"), setting, TrainConfig(channels_last=asked),
                                        torch.device("cpu"), 1)
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert channels_last is expected
    assert (conv.weight.stride(1) == 1) is expected  # NHWC: the channels are the innermost dimension
    assert TrainConfig().channels_last is True


def test_train_subset_sets_the_epoch_length(tmp_path, capsys):
    code = cli_main(["train", "DARTS_V2", *TINY, "--train-subset", "64", "--epochs", "2", "--json",
                     "--run-dir", str(tmp_path / "run")])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["steps"] == 4  # 2 epochs x 64 images / batch 32
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_subset"] == 64



@pytest.mark.parametrize("epochs, given, warmup", [(250, None, 5), (100, None, 2), (3, None, 0), (3, 1, 1)])
def test_imagenet_recipe_warm_up_keeps_its_share_of_a_shorter_run(epochs: int, given: int | None, warmup: int):
    config = make_config("DARTS_V2", dataset="cifar10", style="imagenet", epochs=epochs, warmup_epochs=given)
    assert config.warmup_epochs == warmup
    assert config.lr == 0.5 and config.label_smoothing == 0.1  # the rest of the ImageNet recipe is kept
