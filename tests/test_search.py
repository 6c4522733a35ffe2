"""The constrained search: budgets met, impossible budgets refused, faithful baseline, exact resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcanas.constraint import Budget, Constraint, auto_channels, check_budgets
from dcanas.spaces.darts.cost import build_cost_table, network_cost
from dcanas.errors import BudgetError, ConfigError
from dcanas.search_config import SearchConfig
from dcanas.search_loop import run_search
from dcanas.spaces.darts.genotype import load_genotype
from dcanas.spaces.darts.network import eval_setting_for
from dcanas.spaces.darts.ops import PARAMETRIC, PRIMITIVES
from dcanas.spaces.darts.space import DartsSpace
from dcanas.spaces.darts.supernet import Supernet, SupernetConfig, derive_genotype

FAST = dict(dataset="digits", epochs=2, max_steps=4, batch_size=32)


def test_baseline_is_the_original_darts_supernet():
    # the DARTS search code logs "param size = 1.930618MB" for 8 cells, 16 channels, CIFAR-10
    model = Supernet(SupernetConfig(bottleneck=1, weight_sharing=False, derived_cells=False))
    assert sum(p.numel() for p in model.weight_parameters()) == 1_930_618
    assert [tuple(a.shape) for a in model.arch_parameters()] == [(14, 8), (14, 8)]
    assert model.mixed_cells == set(range(8))


@pytest.mark.parametrize("bottleneck, sharing, derived", [(1, True, False), (4, False, False), (4, True, False),
                                                          (4, True, True), (1, False, True)])
def test_every_saving_combination_trains(bottleneck, sharing, derived):
    torch.manual_seed(0)
    model = Supernet(SupernetConfig(bottleneck=bottleneck, weight_sharing=sharing, derived_cells=derived))
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.alpha_normal.grad.abs().sum() > 0 and model.alpha_reduce.grad.abs().sum() > 0
    assert len(model.mixed_cells) == (2 if derived else 8)


def test_savings_shrink_the_supernet():
    plain = Supernet(SupernetConfig(bottleneck=1, weight_sharing=False, derived_cells=False))
    shared = Supernet(SupernetConfig(bottleneck=1, weight_sharing=True, derived_cells=False))
    both = Supernet(SupernetConfig(bottleneck=4, weight_sharing=True, derived_cells=False))
    count = lambda m: sum(p.numel() for p in m.weight_parameters())  # noqa: E731
    assert count(plain) > 2 * count(shared) > 2 * count(both)


def test_derive_keeps_two_strongest_inputs_and_best_non_none_op():
    alpha = torch.zeros(14, len(PRIMITIVES))
    alpha[:, PRIMITIVES.index("none")] = 10.0  # none never wins
    # node 4 (edges 5..8 from nodes 0..3): strongest from nodes 3 and 1
    alpha[8, PRIMITIVES.index("sep_conv_5x5")] = 5.0
    alpha[6, PRIMITIVES.index("dil_conv_3x3")] = 4.0
    g = derive_genotype(alpha, alpha)
    assert g.normal[4:6] == [("dil_conv_3x3", 1), ("sep_conv_5x5", 3)]
    assert all(op != "none" for op, _ in g.normal + g.reduce)


@pytest.fixture(scope="module")
def digits_table():
    return build_cost_table(eval_setting_for("digits"))


def test_impossible_budgets_are_refused_with_both_limits(digits_table):
    low, high = digits_table.bounds("params")
    for limit in (low * 0.5, high * 1.5):
        with pytest.raises(BudgetError) as err:
            check_budgets(digits_table, [Budget("params", limit)], DartsSpace().suggest)
        assert f"{low:,.6g}" in str(err.value) and f"{high:,.6g}" in str(err.value)
        assert "--channels" in str(err.value)
    check_budgets(digits_table, [Budget("params", (low + high) / 2)], DartsSpace().suggest)


def test_impossible_budget_refused_before_search(tmp_path):
    with pytest.raises(BudgetError, match="below the smallest"):
        run_search(SearchConfig(max_params=1000, **FAST), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_auto_channels_puts_budget_inside_the_range():
    base = eval_setting_for("cifar10")
    budget = [Budget("params", 400_000)]  # far below the 1.37M floor of 36 channels
    channels = auto_channels(lambda c: build_cost_table(base.replace(channels=c)), budget)
    low, high = build_cost_table(base.replace(channels=channels)).bounds("params")
    assert low + 0.3 * (high - low) <= 400_000 <= high
    low2, high2 = build_cost_table(base.replace(channels=channels + 2)).bounds("params")
    assert low2 + 0.3 * (high2 - low2) > 400_000


def test_repair_meets_the_budget_with_next_ranked_ops(digits_table):
    alpha = torch.zeros(14, len(PRIMITIVES))
    alpha[:, PRIMITIVES.index("sep_conv_5x5")] = 3.0
    alpha[:, PRIMITIVES.index("max_pool_3x3")] = 2.0
    g = derive_genotype(alpha, alpha)
    low, high = digits_table.bounds("params")
    limit = low + 0.2 * (high - low)
    assert digits_table.genotype_cost(g)["params"] > limit
    fixed, changes = DartsSpace().repair(g, [alpha, alpha], digits_table, [Budget("params", limit)])
    assert digits_table.genotype_cost(fixed)["params"] <= limit
    # cheaper convolutions first; parameter-free ops (the pooling the alphas rank next) only once no
    # parametric swap saves anything more
    targets = [c.rsplit("-> ", 1)[1] for c in changes if "given back" not in c]
    free = [t not in PARAMETRIC for t in targets]
    assert any(free) and not all(free) and free == sorted(free)
    assert all(t == "max_pool_3x3" for t, f in zip(targets, free) if f)


def test_repair_prefers_a_cheaper_convolution_to_the_pooling_alphas_rank_next(digits_table):
    alpha = torch.zeros(14, len(PRIMITIVES))
    alpha[:, PRIMITIVES.index("sep_conv_5x5")] = 3.0
    alpha[:, PRIMITIVES.index("max_pool_3x3")] = 2.0
    g = derive_genotype(alpha, alpha)
    limit = digits_table.genotype_cost(g)["params"] - 1  # one swap is enough
    fixed, changes = DartsSpace().repair(g, [alpha, alpha], digits_table, [Budget("params", limit)])
    assert len(changes) == 1 and changes[0].rsplit("-> ", 1)[1] in PARAMETRIC
    assert digits_table.genotype_cost(fixed)["params"] <= limit


def test_repair_gives_back_what_the_walk_overdid_but_never_to_a_parameter_free_op(digits_table):
    alpha = torch.zeros(14, len(PRIMITIVES))
    alpha[:, PRIMITIVES.index("sep_conv_5x5")] = 3.0
    alpha[:, PRIMITIVES.index("sep_conv_3x3")] = 2.0
    g = derive_genotype(alpha, alpha)
    space = DartsSpace()
    for fraction in (0.3, 0.6, 0.9):
        low, high = digits_table.bounds("params")
        limit = low + fraction * (high - low)
        fixed, changes = space.repair(g, [alpha, alpha], digits_table, [Budget("params", limit)])
        assert digits_table.genotype_cost(fixed)["params"] <= limit
        for line in changes:
            if "given back" in line:
                assert line.split("-> ")[1].split(" (")[0] in PARAMETRIC
        # nothing more the alphas rank higher still fits: give_back left no parametric upgrade behind
        from dcanas.landing import give_back
        assert give_back(fixed, space.op_changes([alpha, alpha]), digits_table,
                         [Budget("params", limit)]) == (fixed, [])


def test_darts_fill_spends_unused_budget_and_never_exceeds_it(digits_table):
    space = DartsSpace()
    torch.manual_seed(0)
    for _ in range(5):
        alpha_n, alpha_r = torch.randn(14, len(PRIMITIVES)), torch.randn(14, len(PRIMITIVES))
        g = derive_genotype(alpha_n, alpha_r)
        before = digits_table.genotype_cost(g)
        budgets = [Budget("params", before["params"] * 1.3), Budget("flops", before["flops"] * 1.3)]
        filled, changes = space.fill(g, [alpha_n, alpha_r], digits_table, budgets)
        after = digits_table.genotype_cost(filled)
        assert all(after[b.metric] <= b.limit for b in budgets)
        assert all("(unused budget)" in c and c.split("-> ")[1].split(" (")[0] in PARAMETRIC for c in changes)
        if changes:
            assert after["params"] > before["params"] or after["flops"] > before["flops"]
    # an exactly full budget leaves the genotype as it is
    assert space.fill(g, [alpha_n, alpha_r], digits_table, [Budget("params", before["params"])]) == (g, [])


def test_darts_search_fills_its_budget_when_asked(tmp_path):
    common = dict(FAST, max_params=150_000, seed=0)
    plain = run_search(SearchConfig(**common, fill_budget=False), tmp_path / "plain", progress=False)
    filled = run_search(SearchConfig(**common, fill_budget=True), tmp_path / "filled", progress=False)
    assert plain.fills == [] and filled.raw_genotype == plain.raw_genotype
    assert not filled.fills or filled.unfilled_genotype == plain.genotype
    assert filled.params <= 150_000 and filled.params >= plain.params
    assert filled.fills or filled.genotype == plain.genotype
    saved = json.loads((tmp_path / "filled" / "result.json").read_text())
    assert saved["budgets"]["params"]["ok"] and saved.get("fills", []) == filled.fills


def test_constraint_estimates(digits_table):
    torch.manual_seed(0)
    alpha_n, alpha_r = torch.randn(14, 8, requires_grad=True), torch.randn(14, 8, requires_grad=True)
    g = derive_genotype(alpha_n, alpha_r)
    derived = Constraint(digits_table, [Budget("params", 2e5), Budget("flops", 3e6)], "derived")
    costs = derived.expected_costs([alpha_n, alpha_r], g)
    exact = digits_table.genotype_cost(g)
    assert costs[0].item() == pytest.approx(exact["params"]) and costs[1].item() == pytest.approx(exact["flops"])
    costs[0].backward()
    assert alpha_n.grad.abs().sum() > 0  # the straight-through value still carries a gradient
    paper = Constraint(digits_table, [Budget("params", 2e5)], "paper")
    uniform = torch.zeros(14, 8)
    normal, reduce = digits_table.per_cell_type("params")
    sources = [i for j in range(2, 6) for i in range(j)]
    expected = digits_table.fixed["params"] + (normal[sources].sum() + reduce[sources].sum()) / 8
    assert paper.expected_costs([uniform, uniform], g)[0].item() == pytest.approx(expected, rel=1e-6)
    # multipliers: projected ascent, never negative
    paper.update([torch.tensor(4e5)])
    assert paper.lambdas.item() == pytest.approx(0.05)
    for _ in range(5):
        paper.update([torch.tensor(1e5)])
    assert paper.lambdas.item() == 0.0



def _penalty_grads(table, limit, scope, genotype_alphas):
    alphas = [a.detach().clone().requires_grad_(True) for a in genotype_alphas]
    constraint = Constraint(table, [Budget("params", limit)], "derived", scope=scope)
    costs = constraint.expected_costs(alphas, derive_genotype(*alphas))
    costs[0].backward()
    return costs[0].item(), [a.grad for a in alphas]


def test_parametric_budget_scope_moves_weight_only_between_convolutions(digits_table):
    """--budget-scope parametric: the budget's gradient never favours a parameter-free op while cheaper
    convolutions on the kept edges could meet the budget; when even they cannot, it acts as scope 'all'."""
    torch.manual_seed(0)
    alphas = [torch.randn(14, 8), torch.randn(14, 8)]
    free = [PRIMITIVES.index(op) for op in PRIMITIVES if op not in PARAMETRIC]
    value_all, grads_all = _penalty_grads(digits_table, 4e5, "all", alphas)
    value, grads = _penalty_grads(digits_table, 4e5, "parametric", alphas)  # the cheapest convolutions fit
    assert value == pytest.approx(value_all)  # the same exact value: only the gradient's direction differs
    assert grads_all[0][:, free].abs().sum() > 0  # scope all: parameter-free logits are pushed
    assert grads[0][:, free].abs().sum() == 0  # in normal cells no parameter-free op has weights
    # softmax over an edge's convolutions: what one gains, the others lose
    assert grads[0].abs().sum() > 0 and grads[0].sum(-1).abs().max() < 1e-6 * grads[0].abs().max()
    # a budget only parameter-free ops can meet (below the cheapest convolutions): the same as scope all
    _, grads_tight = _penalty_grads(digits_table, 1.2e5, "parametric", alphas)
    _, grads_tight_all = _penalty_grads(digits_table, 1.2e5, "all", alphas)
    assert all(torch.equal(a, b) for a, b in zip(grads_tight, grads_tight_all))


def test_budget_scope_refusals(tmp_path):
    for argv, words in ((["--budget-scope", "cheap"], "invalid choice"),
                        (["--budget-scope", "parametric", "--constraint", "paper"], "--constraint derived")):
        out = subprocess.run([sys.executable, "-m", "dcanas", "search", "--run-dir", str(tmp_path / "r"), *argv],
                             capture_output=True, text=True)
        assert out.returncode == 2 and words in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "r").exists()


SWEEP = [dict(max_params=120_000), dict(max_params=180_000), dict(max_params=300_000),
         dict(max_flops=1.6e6), dict(max_flops=3e6), dict(max_params=150_000, max_flops=2.5e6),
         dict(max_params=150_000, constraint="paper")]


@pytest.mark.parametrize("budget", SWEEP, ids=lambda b: "-".join(f"{k}={v:g}" if isinstance(v, float) or
                                                                 isinstance(v, int) else v for k, v in b.items()))
def test_budgets_never_exceeded(tmp_path, budget):
    result = run_search(SearchConfig(**FAST, **budget), tmp_path / "run", progress=False)
    deployed = network_cost(result.genotype, result.setting)  # counted from scratch, not from the table
    for metric, limit in (("params", budget.get("max_params")), ("flops", budget.get("max_flops"))):
        if limit is not None:
            assert getattr(deployed, metric) <= limit
            assert result.budgets[metric]["ok"] and result.budgets[metric]["value"] == getattr(deployed, metric)
    assert load_genotype(tmp_path / "run") == result.genotype
    for name in ("config.json", "metrics.csv", "history.json", "genotype.txt", "cell_normal.dot", "search.png",
                 "report.md", "result.json", "checkpoint.pt"):
        assert (tmp_path / "run" / name).is_file(), name


def _search_cmd(run_dir, *extra):
    # 640 of the digits images: 10 steps an epoch, long enough (~3 s) to be killed inside the second one
    return [sys.executable, "-m", "dcanas", "search", "--epochs", "3", "--batch-size", "32", "--seed", "3",
            "--max-params", "150K", "--train-subset", "640", "--quiet", "--run-dir", str(run_dir), *extra]


def _final_state(run_dir):
    ckpt = torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)
    settling = json.loads((Path(run_dir) / "result.json").read_text())["settling"]
    return (ckpt["model"]["alpha_normal"], ckpt["model"]["alpha_reduce"], (Path(run_dir) / "genotype.txt").read_text(),
            settling)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full") / "run"
    subprocess.run(_search_cmd(run_dir), check=True, capture_output=True, timeout=600)
    return _final_state(run_dir)


def _wait_for_epochs(run_dir, n, proc, timeout=300):
    deadline = time.time() + timeout
    history = Path(run_dir) / "history.json"
    while time.time() < deadline:
        if history.is_file():
            try:
                if len(json.loads(history.read_text())) >= n:
                    return
            except ValueError:
                pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise TimeoutError


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_search_resumes_exactly(tmp_path, uninterrupted, sig):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_search_cmd(run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(run_dir, 1, proc)
    time.sleep(0.7)  # into the second epoch
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    assert not (run_dir / "genotype.txt").exists(), "the run finished before it was killed"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and ckpt["step"] > 0  # checkpointed mid-epoch on the signal
    subprocess.run([sys.executable, "-m", "dcanas", "search", "--quiet", "--resume", str(run_dir)], check=True,
                   capture_output=True, timeout=600)
    a_n, a_r, text, settling = _final_state(run_dir)
    assert torch.equal(a_n, uninterrupted[0]) and torch.equal(a_r, uninterrupted[1])
    assert text == uninterrupted[2]
    assert settling == uninterrupted[3] and settling["alpha_steps"] > 0  # the trace resumed with the search
    rows = (run_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3  # header + one row per epoch, no duplicates from the resumed epoch


def test_search_with_a_fixed_reduction_cell_resumes_exactly(tmp_path):
    """The pinned reduction alphas stay pinned (and out of the optimiser) across a kill and --resume."""
    from dcanas.spaces.darts.supernet import fixed_reduce_cell, pinned_logits

    extra = ("--reduce-cell", "DARTS_V2")
    subprocess.run(_search_cmd(tmp_path / "full", *extra), check=True, capture_output=True, timeout=600)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_search_cmd(run_dir, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(run_dir, 1, proc)
    time.sleep(0.7)  # into the second epoch
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 130 and not (run_dir / "genotype.txt").exists()
    subprocess.run([sys.executable, "-m", "dcanas", "search", "--quiet", "--resume", str(run_dir)], check=True,
                   capture_output=True, timeout=600)
    resumed, full = _final_state(run_dir), _final_state(tmp_path / "full")
    assert torch.equal(resumed[0], full[0]) and resumed[2:] == full[2:]
    assert torch.equal(resumed[1], pinned_logits(fixed_reduce_cell("DARTS_V2"), 4)) and torch.equal(resumed[1], full[1])


def test_cli_json_and_user_errors(tmp_path, capsys):
    from dcanas.cli import main

    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "dcanas", "search", "--max-steps", "2", "--epochs", "1",
                          "--quiet", "--json", "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"genotype", "params", "flops", "budgets", "run_dir"} <= set(result)
    assert result["genotype"].startswith("Genotype(normal=[")
    assert result["budgets"]["params"]["limit"] == 200_000  # the built-in default budget
    assert result["budgets"]["params"]["value"] == result["params"] <= 200_000
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    # the refusals in-process (the same exit status and stderr, without a torch import each)
    assert main(["search", "--max-steps", "2", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "already holds files" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    (run_dir / "checkpoint.pt").write_bytes(b"garbage")
    assert main(["search", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "unreadable" in err and "Traceback" not in err
    assert main(["search", "--max-params", "10K", "--run-dir", str(tmp_path / "impossible")]) == 2
    assert "below the smallest" in capsys.readouterr().err and not (tmp_path / "impossible").exists()


def test_warmup_trains_only_weights_first(tmp_path, monkeypatch):
    from dcanas import search_loop as search_module

    calls = {"alpha": 0, "weight": 0}
    for kind in calls:
        original = getattr(search_module.BilevelStep, f"{kind}_step")

        def counted(self, x, y, _original=original, _kind=kind):
            calls[_kind] += 1
            return _original(self, x, y)
        monkeypatch.setattr(search_module.BilevelStep, f"{kind}_step", counted)
    config = SearchConfig(dataset="digits", epochs=2, batch_size=64, warmup_epochs=1.5, max_params=150_000)
    logged = []
    result = run_search(config, tmp_path / "run", progress=True, log=logged.append)  # the per-epoch log line too
    assert logged[0].startswith("epoch 1: val_acc warm-up") and logged[1].startswith("epoch 2: val_acc 0.")
    steps_per_epoch = calls["weight"] // 2
    assert result.steps == calls["weight"] == 2 * steps_per_epoch
    assert calls["alpha"] == 2 * steps_per_epoch - round(1.5 * steps_per_epoch) > 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["metrics"]["val_acc"] is None  # a whole warm-up epoch: no alpha batches seen
    assert 0.0 <= history[1]["metrics"]["val_acc"] <= 1.0
    assert (tmp_path / "run" / "search.png").is_file()


def test_warmup_longer_than_search_is_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="--warmup-epochs"):
        run_search(SearchConfig(dataset="digits", epochs=2, warmup_epochs=2), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_skip_cap_keeps_the_strongest_skips_and_swaps_the_rest():
    rows = 14  # edges of a 4-step cell
    skip, sep3, dil5 = (PRIMITIVES.index(op) for op in ("skip_connect", "sep_conv_3x3", "dil_conv_5x5"))
    alpha = torch.zeros(rows, len(PRIMITIVES))
    alpha[:, skip] = torch.arange(rows) + 3.0  # skip wins everywhere, later edges more strongly
    alpha[:, sep3] = 1.0  # every edge's runner-up
    alpha[3, dil5] = 2.0  # except edge 3's
    free = derive_genotype(alpha, alpha)
    assert [op for op, _ in free.normal] == ["skip_connect"] * 8
    capped = derive_genotype(alpha, alpha, max_skips=2)
    assert [i for _, i in capped.normal] == [i for _, i in free.normal]  # the same edges, only ops change
    kept = [n for n, (op, _) in enumerate(capped.normal) if op == "skip_connect"]
    assert kept == [6, 7]  # the two strongest skip edges are the last node's
    runner_up = ["sep_conv_3x3"] * 8
    runner_up[2] = "dil_conv_5x5"  # the third chosen edge is alpha row 3
    assert [op for op, _ in capped.normal[:6]] == runner_up[:6]  # each swapped edge takes its runner-up
    assert capped.reduce == free.reduce  # the cap is for the normal cell only
    assert [op for op, _ in derive_genotype(alpha, alpha, max_skips=0).normal] == runner_up


def test_search_with_skip_cap_and_its_refusals(tmp_path):
    result = run_search(SearchConfig(**FAST, max_params=300_000, max_skips=0), tmp_path / "run", progress=False)
    if not result.repairs:  # repair may choose skips to meet a budget; this one leaves room
        assert all(op != "skip_connect" for op, _ in result.genotype.normal)
    with pytest.raises(ConfigError, match="--max-skips"):
        run_search(SearchConfig(**FAST, max_params=300_000, max_skips=-1), tmp_path / "bad", progress=False)
    with pytest.raises(ConfigError, match="--max-skips"):
        run_search(SearchConfig(space="nb201", dataset="digits", max_skips=2), tmp_path / "nb", progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "nb").exists()


def test_max_model_bytes_is_a_params_budget_at_the_deployed_dtype(tmp_path):
    from dcanas.memory import model_bytes
    from dcanas.spaces.darts.network import EvalNetwork, EvalSetting

    config = SearchConfig(max_model_bytes=180_000, deploy_dtype="int8", epochs=1, max_steps=3)
    assert [(b.metric, b.limit) for b in config.budgets()] == [("params", 180_000)]
    assert SearchConfig(max_model_bytes=800_000, max_params=150_000).budgets()[0].limit == 150_000  # tighter wins
    result = run_search(config, tmp_path / "run", progress=False, log=lambda message: None)
    net = EvalNetwork(result.genotype, EvalSetting(**result.setting.to_dict()))
    assert model_bytes(net, "int8") == result.params <= 180_000
    out = subprocess.run([sys.executable, "-m", "dcanas", "search", "--max-model-bytes", "100", "--run-dir",
                          str(tmp_path / "r2")], capture_output=True, text=True)
    assert out.returncode == 2 and "--max-model-bytes 100 (float32: 25 parameters) is below" in out.stderr
    assert not (tmp_path / "r2").exists()


def test_max_memory_search_holds_its_peak_budget(tmp_path):
    """--max-memory: the derived network's peak activation memory (counted on the built network) is within the
    budget; the search log and result carry it at the deployed dtype."""
    from dcanas.memory import peak_activation_bytes
    from dcanas.spaces.darts.network import EvalNetwork, EvalSetting

    table = build_cost_table(eval_setting_for("digits"), memory_dtype="float16")
    low, high = table.bounds("memory")
    limit = low + 0.1 * (high - low)  # tight: most genotypes break it
    config = SearchConfig(**FAST, max_memory=limit, deploy_dtype="float16")
    assert [(b.metric, b.limit) for b in config.budgets()] == [("memory", limit)]
    result = run_search(config, tmp_path / "run", progress=False, log=lambda message: None)
    net = EvalNetwork(result.genotype, EvalSetting(**result.setting.to_dict()))
    value = peak_activation_bytes(net, dtype="float16")
    assert result.budgets["memory"] == {"limit": limit, "value": value, "ok": True} and value <= limit
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert "derived_memory" in rows[0] and "lambda_memory" in rows[0]


def test_max_memory_refusals_and_auto_width(tmp_path, capsys):
    from dcanas.cli import main

    # below the smallest network: the limits and the widths that reach it, nothing written
    assert main(["search", "--max-memory", "40K", "--run-dir", str(tmp_path / "low")]) == 2
    err = capsys.readouterr().err
    assert "--max-memory 40,000 (float32) is below the smallest network" in err and "49,408 .. 58,752 bytes" in err
    assert "reachable with --cells 8 --channels 12" in err and not (tmp_path / "low").exists()
    for extra, message in ((["--space", "nb201"], "implemented for --space darts"),
                           (["--budget-scope", "parametric"], "drop it with --max-memory")):
        assert main(["search", "--max-memory", "50K", *extra, "--run-dir", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()
    # --channels auto: the widest width that puts the budget 30% up its range
    config = SearchConfig(dataset="digits", max_memory=200_000, eval_channels="auto")
    setting = DartsSpace().eval_setting(config, 1, 10, 8)
    low, high = build_cost_table(setting, memory_dtype="float32").bounds("memory")
    assert low + 0.3 * (high - low) <= 200_000
    low, high = build_cost_table(setting.replace(channels=setting.channels + 2), memory_dtype="float32").bounds("memory")
    assert low + 0.3 * (high - low) > 200_000


def test_repair_brings_a_peak_over_budget_within_it():
    import random

    from dcanas.landing import repair
    from dcanas.spaces.darts.genotype import random_genotype

    setting = eval_setting_for("digits")
    table = build_cost_table(setting, memory_dtype="float32")
    low, high = table.bounds("memory")
    rng = random.Random(0)
    heavy = max((random_genotype(rng) for _ in range(40)), key=lambda g: table.genotype_cost(g)["memory"])
    budget = Budget("memory", low)
    assert table.genotype_cost(heavy)["memory"] > low + 0.5 * (high - low)
    alphas = [torch.zeros(14, 8), torch.zeros(14, 8)]
    fixed, changes = repair(heavy, DartsSpace().op_changes(alphas), table, [budget])
    assert changes and table.genotype_cost(fixed)["memory"] <= low


def test_cheapest_parametric_cost_is_the_network_with_every_edge_at_its_cheapest_weighted_op():
    from dcanas.constraint import cheapest_parametric_cost
    from dcanas.spaces.darts.genotype import GENOTYPES, make_genotype

    setting = eval_setting_for("digits")
    table = build_cost_table(setting)
    genotype = GENOTYPES.get("DARTS_V2")
    # built by hand: a dilated 3x3 (the cheapest convolution) on every normal edge; on reduction edges from the
    # cell inputs the skip, a stride-2 FactorizedReduce (1x1 convolutions: cheaper still); dilated 3x3 elsewhere
    normal = [("dil_conv_3x3", i) for _, i in genotype.normal]
    reduce = [("skip_connect" if i < 2 else "dil_conv_3x3", i) for _, i in genotype.reduce]
    by_hand = network_cost(make_genotype(normal, reduce), setting)
    assert cheapest_parametric_cost(table, genotype, "params") == by_hand.params == 250_682
    assert cheapest_parametric_cost(table, genotype, "flops") == by_hand.flops


def test_a_budget_that_demands_parameter_free_ops_says_so(tmp_path, capsys):
    from dcanas.cli import main
    from dcanas.constraint import cheapest_parametric_cost

    # the digits default: 200K at 8 cells x 16, where no network with weights on every edge fits
    assert main(["search", "--max-steps", "2", "--epochs", "1", "--quiet", "--json", "--run-dir",
                 str(tmp_path / "tight")]) == 0
    result = json.loads(capsys.readouterr().out)
    (note,) = result["notes"]
    genotype = load_genotype(result["genotype"])
    cheapest = cheapest_parametric_cost(build_cost_table(eval_setting_for("digits")), genotype, "params")
    assert cheapest > 200_000 and f"{cheapest:,.0f}" in note
    # the width it names is the widest narrower one where the same cells could hold weights on every edge
    width = int(note.split("--channels ")[1].split(",")[0])
    fits = [cheapest_parametric_cost(build_cost_table(eval_setting_for("digits", channels=c)), genotype, "params")
            <= 200_000 for c in (width, width + 2)]
    assert fits == [True, False]
    assert "Note: --max-params 200,000 cannot hold" in (tmp_path / "tight" / "report.md").read_text()
    # a budget with room for a convolution on every edge: no note
    assert main(["search", "--max-steps", "2", "--epochs", "1", "--quiet", "--json", "--max-params", "400K",
                 "--run-dir", str(tmp_path / "roomy")]) == 0
    assert "notes" not in json.loads(capsys.readouterr().out)


def _cells_equal(a, b) -> bool:
    """Two genotype cells hold the same edges per node (derive lists a node's two inputs by index)."""
    return [sorted(a[k:k + 2], key=lambda e: e[1]) for k in range(0, len(a), 2)] == \
        [sorted(b[k:k + 2], key=lambda e: e[1]) for k in range(0, len(b), 2)]


def test_a_fixed_reduction_cell_is_pinned_and_only_the_normal_cell_is_searched():
    from dcanas.spaces.darts.supernet import fixed_reduce_cell

    torch.manual_seed(0)
    fixed = fixed_reduce_cell("DARTS_V2")
    model = Supernet(SupernetConfig(fixed_reduce=fixed))
    assert _cells_equal(model.derive().reduce, list(fixed))
    assert model.mixed_cells == {0}  # the first normal cell mixes; every reduction cell runs the fixed edges
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert model.alpha_reduce.grad is None and model.alpha_normal.grad.abs().sum() > 0
    # every other op of a pinned edge has probability exactly zero, so landing lists no change to it
    weights = torch.softmax(model.ranking_alphas()[1], -1)
    assert ((weights == 0) | (weights == 1)).all()
    changes = list(DartsSpace().op_changes(model.ranking_alphas())(model.derive()))
    assert len(changes) == 8 * 6 and all(c.text.startswith("normal") for c in changes)  # 8 edges x 6 other ops


def test_a_search_with_a_fixed_reduction_cell_keeps_it_through_repair_and_fill(tmp_path):
    from dcanas.spaces.darts.genotype import GENOTYPES

    # 120K at 16 channels cannot hold convolutions everywhere: repair has to act, and only on the normal cell
    config = SearchConfig(**FAST, max_params=120_000, reduce_cell="DARTS_V2", fill_budget=True, rerank="none")
    result = run_search(config, tmp_path / "run", progress=False)
    assert _cells_equal(result.genotype.reduce, GENOTYPES.get("DARTS_V2").reduce)
    assert _cells_equal(result.raw_genotype.reduce, GENOTYPES.get("DARTS_V2").reduce)
    assert all(line.startswith("normal") for line in result.repairs + result.fills)
    assert network_cost(result.genotype, result.setting).params <= 120_000
    # the reduction alphas on disk are the pinned ones, unmoved by Adam, beta-decay and the budget's step
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]["alpha_reduce"]
    from dcanas.spaces.darts.supernet import fixed_reduce_cell, pinned_logits
    assert torch.equal(saved, pinned_logits(fixed_reduce_cell("DARTS_V2"), 4))


def test_a_reduction_cell_that_cannot_be_pinned_is_refused():
    from dcanas.spaces.darts.supernet import check_pinnable

    fine = [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4
    assert check_pinnable(fine, 4) is None
    assert "twice" in check_pinnable([("max_pool_3x3", 0), ("skip_connect", 0)] + fine[2:], 4)
    assert "none" in check_pinnable([("none", 0), ("max_pool_3x3", 1)] + fine[2:], 4)
    assert "edges" in check_pinnable(fine[:6], 4)
