"""Remedies against collapse (beta-decay, Dirichlet), one-shot scoring, and `--repeats`: mechanics, not accuracy."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from dcanas.errors import ConfigError
from dcanas.remedies import (REMEDIES, beta_decay_loss, beta_decay_weight, check_remedy, mixing_weights,
                             ranking_logits)
from dcanas.repeats import REPEATS_FILE, run_repeats, select_best
from dcanas.search_config import SearchConfig
from dcanas.search_loop import run_search

FAST = dict(dataset="digits", epochs=1, batch_size=64, max_steps=4, max_params=150_000)


def test_beta_decay_gradient_is_the_softmax_over_the_edge_count():
    torch.manual_seed(0)
    alphas = [torch.randn(14, 8, requires_grad=True), torch.randn(14, 8, requires_grad=True)]
    beta_decay_loss(alphas).backward()
    for a in alphas:
        assert torch.allclose(a.grad, torch.softmax(a.detach(), -1) / 28, atol=1e-7)


def test_beta_decay_weight_ramps_linearly_from_zero():
    assert beta_decay_weight(0, 11, 5.0) == 0.0
    assert beta_decay_weight(5, 11, 5.0) == pytest.approx(2.5)
    assert beta_decay_weight(10, 11, 5.0) == pytest.approx(5.0)
    assert beta_decay_weight(50, 11, 5.0) == pytest.approx(5.0)  # never beyond the final weight


def test_dirichlet_weights_are_distributions_with_gradients_and_a_deterministic_mean():
    torch.manual_seed(0)
    alpha = torch.randn(6, 5, requires_grad=True)
    sample = mixing_weights(alpha, "dirichlet", training=True)
    assert torch.allclose(sample.sum(-1), torch.ones(6), atol=1e-5) and (sample >= 0).all()
    sample[:, 3].sum().backward()
    assert alpha.grad.abs().sum() > 0  # reparameterised: the alphas still learn
    mean = mixing_weights(alpha, "dirichlet", training=False)
    concentration = torch.nn.functional.elu(alpha.detach()) + 1
    assert torch.allclose(mean, concentration / concentration.sum(-1, keepdim=True))
    assert not torch.equal(sample.detach(), mixing_weights(alpha, "dirichlet", training=True).detach())
    # what derivation ranks by is the mean mixing weight, and plain softmax is unchanged
    assert torch.allclose(torch.softmax(ranking_logits(alpha, "dirichlet"), -1), mean, atol=1e-6)
    assert torch.equal(ranking_logits(alpha, "none"), alpha.detach())
    assert torch.allclose(mixing_weights(alpha, "none", training=True), torch.softmax(alpha, -1))


def test_unknown_remedy_is_refused_with_the_valid_names():
    assert check_remedy("beta-decay") == "beta-decay"
    with pytest.raises(ConfigError, match="none, beta-decay, dirichlet"):
        check_remedy("drnas")


@pytest.mark.parametrize("space", ["darts", "nb201"])
@pytest.mark.parametrize("remedy", [r for r in REMEDIES if r != "none"])
def test_each_remedy_searches_in_each_space(tmp_path, space, remedy):
    extra = {} if space == "darts" else {"space": "nb201", "dataset": "synthetic", "max_params": None, "cells": 3,
                                         "image_size": 16, "rerank": "none"}  # the rerank: test_proxies.py
    config = SearchConfig(**{**FAST, **extra, "remedy": remedy})
    result = run_search(config, tmp_path / "run", progress=False, log=lambda m: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert result.steps == 4 and history[-1]["genotype"] == result.space.to_text(result.raw_genotype)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["remedy"] == remedy


def test_beta_decay_keeps_alphas_closer_to_uniform(tmp_path):
    """The same search with a heavy regulariser ends with flatter alphas than without it."""
    def spread(remedy: str, weight: float) -> float:
        config = SearchConfig(**{**FAST, "max_steps": 8, "arch_lr": 0.05, "remedy": remedy, "beta_weight": weight})
        run_search(config, tmp_path / f"{remedy}-{weight}", progress=False, log=lambda m: None)
        state = torch.load(tmp_path / f"{remedy}-{weight}" / "checkpoint.pt", weights_only=True)["model"]
        return float(torch.softmax(state["alpha_normal"], -1).max(-1).values.mean())

    assert spread("beta-decay", 200.0) < spread("none", 0.0)


def test_bad_remedy_options_exit_2_and_write_nothing(tmp_path, capsys):
    from dcanas.cli import main

    for extra, message in ((["--remedy", "drnas"], "unknown --remedy"),
                           (["--beta-weight", "-1"], "--beta-weight must be"),
                           (["--beta-weight", "nan"], "--beta-weight must be"),
                           (["--repeats", "0"], "--repeats must be a positive"),
                           (["--search-image-size", "2"], "--search-image-size must be"),
                           (["--penalty-lr", "0"], "--penalty-lr must be"),
                           (["--budget-floor", "1.5"], "--budget-floor is a fraction"),
                           (["--train-subset", "1"], "--train-subset must be"),
                           (["--alpha-noise", "1.5"], "--alpha-noise must be in"),
                           (["--repeats", "2", "--repeat-select", "best"], "invalid choice: 'best'"),
                           (["--repeat-select", "one-shot"], "give --repeats too")):
        run_dir = tmp_path / "run"
        try:
            code = main(["search", "--max-steps", "1", "--quiet", "--run-dir", str(run_dir), *extra])
        except SystemExit as stop:  # argparse's own refusals (an invalid choice) exit from inside the parser
            code = stop.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not run_dir.exists()


def test_select_best_prefers_budget_then_score_then_lower_seed():
    ok, over = {"params": {"ok": True}}, {"params": {"ok": False}}
    runs = [{"seed": 0, "derived_val_acc": 0.5, "budgets": ok}, {"seed": 1, "derived_val_acc": 0.9, "budgets": over},
            {"seed": 2, "derived_val_acc": 0.7, "budgets": ok}, {"seed": 3, "derived_val_acc": 0.7, "budgets": ok}]
    assert select_best(runs)["seed"] == 2


def test_repeats_keep_every_record_select_the_best_and_resume_as_a_whole(tmp_path):
    config = SearchConfig(**FAST, seed=3)
    first = run_repeats(config, 2, tmp_path / "set", jobs=1, select="one-shot", log=lambda m: None, progress=False)
    plan = json.loads((tmp_path / "set" / REPEATS_FILE).read_text())
    assert plan["seeds"] == [3, 4] and [r["seed"] for r in plan["runs"]] == [3, 4]
    scores = {r["seed"]: r["derived_val_acc"] for r in plan["runs"]}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    best = max(scores, key=lambda s: (scores[s], -s))
    assert plan["selected_seed"] == first["selected_seed"] == best
    winner = json.loads((tmp_path / "set" / f"seed{best}" / "genotype.json").read_text())
    assert json.loads((tmp_path / "set" / "genotype.json").read_text()) == winner
    # a set interrupted before its second search started: resuming runs only that one, with the same outcome
    shutil.rmtree(tmp_path / "set" / "seed4")
    (tmp_path / "set" / "result.json").unlink()
    again = run_repeats(None, run_dir=tmp_path / "set", resume=True, jobs=1, log=lambda m: None, progress=False)
    assert [r["genotype"] for r in again["repeats"]] == [r["genotype"] for r in first["repeats"]]
    assert [r["derived_val_acc"] for r in again["repeats"]] == [r["derived_val_acc"] for r in first["repeats"]]
    assert again["selected_seed"] == first["selected_seed"]


def test_repeats_consensus_derives_from_the_averaged_weights_and_resumes_alike(tmp_path):
    import numpy as np

    from dcanas.spaces import SPACES

    config = SearchConfig(**FAST, seed=3)
    first = run_repeats(config, 2, tmp_path / "set", jobs=1, log=lambda m: None, progress=False)  # the default
    space = SPACES.get("darts")
    runs = [json.loads((tmp_path / "set" / f"seed{s}" / "result.json").read_text()) for s in (3, 4)]

    def logits(weights: list) -> list[torch.Tensor]:
        return [torch.tensor(np.asarray(w, dtype=np.float64)).float().log() for w in weights]

    for run in runs:  # the space's derive is the supernet's: each search's own weights give its own genotype
        assert space.to_text(space.derive(logits([run["mixing_weights"][n] for n in space.alpha_names]),
                                          config)) == run["raw_genotype"]
    averaged = [(np.asarray(runs[0]["mixing_weights"][n]) + np.asarray(runs[1]["mixing_weights"][n])) / 2
                for n in space.alpha_names]
    assert first["raw_genotype"] == space.to_text(space.derive(logits(averaged), config))
    assert first["selection"] == "consensus" and first["selected_seed"] is None and first["consensus_of"] == [3, 4]
    assert all(b["ok"] for b in first["budgets"].values()) and first["budgets"]["params"]["value"] <= 150_000
    assert (tmp_path / "set" / "genotype.txt").read_text().strip() == first["genotype"]
    assert "Consensus of 2 searches" in (tmp_path / "set" / "report.md").read_text()
    plan = json.loads((tmp_path / "set" / REPEATS_FILE).read_text())
    assert plan["select"] == "consensus" and [r["seed"] for r in plan["runs"]] == [3, 4]
    # interrupted after the searches, before the consensus was written: resuming makes the same network
    for name in ("result.json", "genotype.json", "genotype.txt", "report.md"):
        (tmp_path / "set" / name).unlink()
    again = run_repeats(None, run_dir=tmp_path / "set", resume=True, jobs=1, log=lambda m: None, progress=False)
    assert again["genotype"] == first["genotype"] and again["budgets"] == first["budgets"]


def test_nb201_space_derives_as_its_supernet():
    from dcanas.search_loop import build_supernet
    from dcanas.spaces import SPACES

    config = SearchConfig(space="nb201", dataset="synthetic", cells=3, image_size=16, max_params=None)
    model = build_supernet(config, 3, 10)
    with torch.no_grad():
        model.alpha.copy_(torch.randn_like(model.alpha))
    assert SPACES.get("nb201").derive(model.ranking_alphas(), config) == model.derive()


def test_a_search_does_not_depend_on_what_ran_before_it_in_the_process(tmp_path):
    """Cost tables are cached and building one may draw random numbers: the seed is set after them."""
    config = SearchConfig(space="nb201", dataset="synthetic", epochs=1, max_steps=2, cells=3, image_size=16,
                          remedy="dirichlet", max_params=None, rerank="none")
    alphas = []
    for k in range(2):
        run_search(config, tmp_path / f"run{k}", progress=False, log=lambda m: None)
        alphas.append(torch.load(tmp_path / f"run{k}" / "checkpoint.pt", weights_only=True)["model"]["alpha"])
    assert torch.equal(alphas[0], alphas[1])


def test_budget_floor_pushes_up_while_under_and_never_below_zero():
    from dcanas.constraint import Budget, Constraint
    from dcanas.spaces.darts.cost import build_cost_table
    from dcanas.spaces.darts.network import eval_setting_for

    table = build_cost_table(eval_setting_for("digits"))
    constraint = Constraint(table, [Budget("params", 1e9)], "derived", lambda_lr=0.5, floor=0.9)
    cost = [torch.tensor(0.5e9, requires_grad=True)]
    constraint.update(cost)  # 50 % used: mu grows by 0.5 * (0.9 - 0.5), lambda stays 0
    assert constraint.mus.tolist() == pytest.approx([0.2]) and constraint.lambdas.tolist() == [0.0]
    constraint.penalty(cost).backward()
    assert cost[0].grad.item() < 0  # lowering the loss means raising the cost
    for _ in range(5):
        constraint.update([torch.tensor(0.99e9)])  # inside the band: mu decays back to 0
    assert constraint.mus.tolist() == [0.0]
    state = constraint.state_dict()
    assert set(state) == {"lambdas", "mus"}
    constraint.load_state_dict({"lambdas": state["lambdas"]})  # an older checkpoint: mu restarts at zero
    assert constraint.mus.tolist() == [0.0]


def test_sgd_penalty_step_is_a_plain_step_outside_adam():
    """With penalty_step='sgd' the budget moves alpha by exactly -penalty_lr * its gradient, after Adam's step
    on the loss alone; with 'adam' it enters Adam's normalised step instead."""
    from dcanas.constraint import Budget, Constraint
    from dcanas.search_loop import BilevelStep, build_supernet
    from dcanas.spaces.darts.network import eval_setting_for
    from dcanas.spaces.darts.cost import build_cost_table

    table = build_cost_table(eval_setting_for("digits"))
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))

    def alpha_after(step: str, constrained: bool):
        config = SearchConfig(dataset="digits", cells=5, remedy="none", penalty_step=step, penalty_lr=0.5)
        torch.manual_seed(1)
        model = build_supernet(config, 1, 10)
        constraint = Constraint(table, [Budget("params", 1e5)]) if constrained else None
        if constraint is not None:
            constraint.lambdas[:] = 2.0
        stepper = BilevelStep(model, config, constraint, torch.device("cpu"))
        grads = None
        if constraint is not None:
            alphas = model.arch_parameters()
            grads = torch.autograd.grad(constraint.penalty(constraint.expected_costs(alphas, model.genotype)), alphas)
        torch.manual_seed(2)
        stepper.alpha_step(x, y)
        return [a.detach().clone() for a in model.arch_parameters()], grads

    plain, _ = alpha_after("sgd", constrained=False)
    sgd, grads = alpha_after("sgd", constrained=True)
    for p, s, g in zip(plain, sgd, grads):
        assert torch.allclose(s, p - 0.5 * g, atol=1e-6)
    adam, _ = alpha_after("adam", constrained=True)
    assert not all(torch.allclose(a, s, atol=1e-6) for a, s in zip(adam, sgd))


# -- PC-DARTS (the baseline of the paper's Figure 3) ------------------------------------------------------------

def test_partial_channels_keep_shapes_and_shuffle_every_channel_through():
    from dcanas.spaces.nb201.supernet import MixedEdge, channel_shuffle

    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    edge = MixedEdge(8, partial=4)
    out = edge(torch.randn(2, 8, 5, 5), torch.softmax(torch.randn(5), -1))
    assert out.shape == (2, 8, 5, 5)
    convs = [m for m in edge.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.in_channels == 2 for c in convs)  # the ops run on 8 / 4 channels


def test_edge_normalisation_sums_to_one_per_node_and_learns():
    from dcanas.spaces.nb201.arch import EDGES
    from dcanas.spaces.nb201.supernet import NB201Supernet, NB201SupernetConfig

    net = NB201Supernet(NB201SupernetConfig(cells_per_stage=1, bottleneck=1, weight_sharing=False,
                                            derived_cells=False, partial_channels=4, edge_norm=True))
    with torch.no_grad():
        net.beta.copy_(torch.randn(6))
    w = net.edge_weights()
    for node in (1, 2, 3):
        assert float(sum(w[k] for k, (_, j) in enumerate(EDGES) if j == node)) == pytest.approx(1.0)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert net.beta.grad is not None and net.beta.grad.abs().sum() > 0
    assert all(p is not net.beta for p in net.weight_parameters())
    plain = NB201Supernet(NB201SupernetConfig(cells_per_stage=1))
    assert "beta" not in plain.state_dict() and plain.edge_parameters() == []


def test_pc_darts_search_runs_and_is_refused_where_it_does_not_apply(tmp_path):
    config = SearchConfig(space="nb201", dataset="synthetic", image_size=16, epochs=1, max_steps=3, cells=3,
                          bottleneck=1, weight_sharing=False, derived_cells=False, partial_channels=4,
                          edge_norm=True, remedy="none", max_params=None, rerank="none")
    result = run_search(config, tmp_path / "pc", progress=False, log=lambda m: None)
    assert result.steps == 3
    state = torch.load(tmp_path / "pc" / "checkpoint.pt", weights_only=True)
    assert "beta" in state["model"] and len(state["a_opt"]["param_groups"][0]["params"]) == 2
    with pytest.raises(ConfigError, match="nb201 only"):
        run_search(SearchConfig(**FAST, partial_channels=4), tmp_path / "darts", progress=False)
    with pytest.raises(ConfigError, match="no-weight-sharing"):
        run_search(SearchConfig(space="nb201", dataset="synthetic", partial_channels=4, max_params=None),
                   tmp_path / "shared", progress=False)
    assert not (tmp_path / "darts").exists() and not (tmp_path / "shared").exists()


def test_random_smoothing_perturbs_weight_steps_only_and_alike_across_micro_batches():
    """SDARTS-RS: mixing weights seen by a weight step = softmax + one draw of U(-eps, eps) per step (the same in
    every micro-batch); alpha steps and evaluation see the plain softmax."""
    from dcanas.remedies import alpha_noise_level, random_perturbations
    from dcanas.search_loop import BilevelStep, build_supernet

    assert random_perturbations([torch.zeros(3, 4)], 0.0) is None
    torch.manual_seed(0)
    delta = random_perturbations([torch.zeros(6, 5), torch.zeros(2, 3)], 0.3)
    assert [d.shape for d in delta] == [(6, 5), (2, 3)] and max(float(d.abs().max()) for d in delta) <= 0.3
    assert float(delta[0].std()) > 0.1  # uniform on [-0.3, 0.3] has sd 0.17
    alpha = torch.randn(6, 5)
    assert torch.allclose(mixing_weights(alpha, perturbation=delta[0]), torch.softmax(alpha, -1) + delta[0])
    assert alpha_noise_level(0, 100, 0.3) == pytest.approx(0.03) and alpha_noise_level(99, 100, 0.3) == 0.3

    config = SearchConfig(**{**FAST, "space": "nb201", "dataset": "synthetic", "max_params": None, "cells": 3,
                             "accum_steps": 2, "rerank": "none"})
    model = build_supernet(config, 3, 10)
    stepper = BilevelStep(model, config, None, torch.device("cpu"))
    seen = []
    original = model.cells[0].forward

    def spy(x, weights=None, **kw):
        seen.append(weights.detach().clone())
        return original(x, weights=weights, **kw)

    model.cells[0].forward = spy
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    stepper.alpha_noise = 0.2
    stepper.weight_step(x, y)
    plain = torch.softmax(model.alpha.detach(), -1)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # one draw for both micro-batches
    assert 0.01 < float((seen[0] - plain).abs().max()) <= 0.2 and model.perturbation is None
    seen.clear()
    stepper.alpha_step(x, y)
    assert all(torch.allclose(w, torch.softmax(model.alpha.detach(), -1), atol=1e-2) for w in seen)
    assert all(float((w - plain).abs().max()) < 0.01 for w in seen)  # unperturbed (alpha moved by one small step)

