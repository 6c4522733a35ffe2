"""The DARTS space's landing list (the alphas' best genotypes inside a budget, by a beam), `--rerank` on it, and
`dcanas land` of a DARTS search."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dcanas.constraint import Budget
from dcanas.errors import ConfigError
from dcanas.search_config import SearchConfig
from dcanas.spaces.darts import candidates as darts_candidates
from dcanas.spaces.darts.cost import build_cost_table
from dcanas.spaces.darts.network import eval_setting_for
from dcanas.spaces.darts.ops import PRIMITIVES
from dcanas.spaces.darts.space import DartsSpace
from dcanas.spaces.darts.supernet import derive_genotype, edge_sources


@pytest.fixture(scope="module")
def table():
    return build_cost_table(eval_setting_for("digits"))


def random_alphas(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(14, len(PRIMITIVES), generator=generator) for _ in range(2)]


def log_score(genotype, alphas) -> float:
    """Sum of log softmax(alpha) over the genotype's edges: the order the list is in."""
    rows = edge_sources(4)
    total = 0.0
    for edges, alpha in ((genotype.normal, alphas[0]), (genotype.reduce, alphas[1])):
        logp = torch.log_softmax(alpha, -1)
        for k, (op, i) in enumerate(edges):
            total += float(logp[rows.index((i, 2 + k // 2)), PRIMITIVES.index(op)])
    return total


def test_without_a_budget_the_list_starts_with_the_darts_derivation_best_first_and_distinct(table):
    alphas = random_alphas(0)
    found = DartsSpace().landing_candidates(alphas, table, [], 50, True)
    assert len(found) == 50 and len({str(g) for g in found}) == 50
    # DARTS' own discretisation maximises each node's two best edges; the highest sum of log weights is the same
    # choice whenever no node's third edge ties (random alphas)
    assert found[0] == derive_genotype(*alphas)
    scores = [log_score(g, alphas) for g in found]
    assert scores == sorted(scores, reverse=True)
    assert all(op != "none" for g in found for op, _ in g.normal + g.reduce)


def test_under_a_budget_every_candidate_uses_85_to_100_percent_of_it_and_the_beam_width_does_not_change_the_top(
        table, monkeypatch):
    alphas = random_alphas(1)
    low, high = table.bounds("params")
    budget = Budget("params", low + 0.4 * (high - low))
    found = DartsSpace().landing_candidates(alphas, table, [budget], 40, True)
    assert len(found) == 40
    costs = [table.genotype_cost(g)["params"] for g in found]
    assert all(0.85 * budget.limit <= c <= budget.limit for c in costs)
    scores = [log_score(g, alphas) for g in found]
    assert scores == sorted(scores, reverse=True)
    # the first choice is worth no less than the alphas' own choice repaired into the budget
    repaired, _ = DartsSpace().repair(derive_genotype(*alphas), alphas, table, [budget])
    assert scores[0] >= log_score(repaired, alphas) - 1e-9
    # a beam 32 times wider finds the same top of the list
    monkeypatch.setattr(darts_candidates, "MIN_BEAM", 32 * darts_candidates.MIN_BEAM)
    wider = DartsSpace().landing_candidates(alphas, table, [budget], 40, True)
    assert [str(g) for g in wider[:20]] == [str(g) for g in found[:20]]
    # without the fill the band is the whole budget: the list's best is at least as good
    anywhere = DartsSpace().landing_candidates(alphas, table, [budget], 5, False)
    assert log_score(anywhere[0], alphas) >= scores[0] - 1e-9
    assert all(table.genotype_cost(g)["params"] <= budget.limit for g in anywhere)


def test_several_additive_budgets_are_all_met(table):
    alphas = random_alphas(2)
    budgets = []
    for metric in ("params", "flops"):
        low, high = table.bounds(metric)
        budgets.append(Budget(metric, low + 0.5 * (high - low)))
    found = DartsSpace().landing_candidates(alphas, table, budgets, 10, True)
    assert found
    for g in found:
        cost = table.genotype_cost(g)
        assert all(cost[b.metric] <= b.limit for b in budgets)
        assert all(cost[b.metric] >= 0.85 * b.limit for b in budgets)


def test_the_beam_reaches_the_cheapest_and_the_dearest_genotype_exactly(table):
    alphas = random_alphas(3)
    for metric in ("params", "flops"):
        low, high = table.bounds(metric)
        cheapest = darts_candidates.top_genotypes(alphas, table, [Budget(metric, low)], 3)
        assert cheapest and all(table.genotype_cost(g)[metric] == low for g in cheapest)
        dearest = darts_candidates.top_genotypes(alphas, table, [Budget(metric, high)], 3, floor=1 - 1e-9)
        assert dearest and all(table.genotype_cost(g)[metric] == high for g in dearest)


def test_a_memory_budget_is_a_limit_on_the_finished_genotypes_and_the_band_stays_the_additive_budgets():
    table = build_cost_table(eval_setting_for("digits"), memory_dtype="float32")
    alphas = random_alphas(4)
    low, high = table.bounds("params")
    params = Budget("params", low + 0.4 * (high - low))
    alone = DartsSpace().landing_candidates(alphas, table, [params], 10, True)
    # a memory limit every genotype meets changes nothing, though no genotype's peak is within 85 % of it
    roomy = Budget("memory", table.bounds("memory")[1] * 4)
    assert DartsSpace().landing_candidates(alphas, table, [params, roomy], 10, True) == alone
    # a tighter one: every candidate under it, and still in the parameter band
    peaks = sorted(table.genotype_cost(g)["memory"] for g in alone)
    tight = Budget("memory", peaks[len(peaks) // 2])
    found = DartsSpace().landing_candidates(alphas, table, [params, tight], 10, True)
    assert found and all(table.genotype_cost(g)["memory"] <= tight.limit for g in found)
    assert all(0.85 * params.limit <= table.genotype_cost(g)["params"] <= params.limit for g in found)


def test_the_node_options_are_every_pair_of_inputs_with_every_op_but_none():
    logp = np.zeros((14, len(PRIMITIVES)))
    costs = np.ones((14, len(PRIMITIVES), 1))
    score, cost, choices = darts_candidates.node_options(logp, costs, 4)  # node 4: inputs 0..3
    assert len(choices) == 6 * 7 * 7 and (cost == 2).all() and (score == 0).all()
    assert set(map(tuple, choices[:, [0, 2]])) == {(a, b) for a in range(4) for b in range(a + 1, 4)}
    assert PRIMITIVES.index("none") not in set(choices[:, 1]) | set(choices[:, 3])


def test_rerank_or_a_landing_scope_with_max_skips_is_refused_but_each_alone_is_fine_in_darts(monkeypatch):
    SearchConfig(space="darts", rerank="synflow+meco+budget").validate()
    SearchConfig(space="darts", budget_scope="landing", max_params=200_000).validate()
    with pytest.raises(ConfigError, match="--max-skips"):
        SearchConfig(space="darts", rerank="synflow", max_skips=2).validate()
    with pytest.raises(ConfigError, match="--max-skips"):
        SearchConfig(space="darts", budget_scope="landing", max_skips=2, rerank="none").validate()
    SearchConfig(space="darts", rerank="none", max_skips=2).validate()
    # a space that cannot list its genotypes refuses the landing scope in one line
    from dcanas.spaces.base import SearchSpace

    monkeypatch.setattr(DartsSpace, "landing_candidates", SearchSpace.landing_candidates)
    with pytest.raises(ConfigError, match="cannot; use --budget-scope all or parametric"):
        SearchConfig(space="darts", budget_scope="landing", rerank="none").validate()


def test_land_a_darts_search_in_another_budget_with_a_rerank(tmp_path):
    from dcanas.reland import land_search
    from dcanas.search_loop import run_search

    config = SearchConfig(dataset="digits", epochs=1, max_steps=3, batch_size=32, seed=0, threads=1,
                          budget_scope="landing", max_params=200_000, rerank="none")
    searched = run_search(config, tmp_path / "search", progress=False, log=lambda m: None)
    assert searched.repairs == [] and 0.85 * 200_000 <= searched.params <= 200_000
    landed = land_search(tmp_path / "search", {"max_params": 180_000, "rerank": "synflow+budget", "rerank_top": 12},
                         tmp_path / "landed", log=lambda m: None)
    assert 0.85 * 180_000 <= landed.params <= 180_000 and landed.budgets["params"]["ok"]
    records = landed.rerank["candidates"]
    assert len(records) == 12 and sum(bool(r.get("chosen")) for r in records) == 1
    chosen = next(r for r in records if r.get("chosen"))
    assert chosen["genotype"] == str(landed.genotype)
    # the same landing again gives the same network (fixed proxy seed, fixed list)
    again = land_search(tmp_path / "search", {"max_params": 180_000, "rerank": "synflow+budget", "rerank_top": 12},
                        tmp_path / "again", log=lambda m: None)
    assert str(again.genotype) == str(landed.genotype)
    saved = json.loads((tmp_path / "landed" / "result.json").read_text())
    assert saved["params"] == landed.params
    # a search derived under --max-skips lands without the cap, and says so
    capped = SearchConfig(dataset="digits", epochs=1, max_steps=2, batch_size=32, seed=0, threads=1,
                          max_params=200_000, max_skips=1, rerank="none")
    run_search(capped, tmp_path / "capped", progress=False, log=lambda m: None)
    said: list[str] = []
    land_search(tmp_path / "capped", {"max_params": 190_000}, tmp_path / "capped-landed", log=said.append)
    assert any("--max-skips 1 does not apply" in line for line in said)
    assert json.loads((tmp_path / "capped-landed" / "config.json").read_text())["max_skips"] is None


def test_land_refuses_a_space_that_cannot_list_and_leaves_no_folder_when_the_landing_fails(tmp_path, monkeypatch):
    from dcanas.errors import BudgetError
    from dcanas.reland import land_search
    from dcanas.search_loop import run_search
    from dcanas.spaces.base import SearchSpace

    config = SearchConfig(dataset="digits", epochs=1, max_steps=2, batch_size=32, seed=0, threads=1,
                          max_params=200_000, rerank="none")
    run_search(config, tmp_path / "search", progress=False, log=lambda m: None)
    # an NB201-only option (here with a typo in the device) is refused, not ignored
    with pytest.raises(ConfigError, match="--latency-device reads NAS-Bench-201's table"):
        land_search(tmp_path / "search", {"max_params": 190_000, "latency_device": "pixle3"}, tmp_path / "out",
                    log=lambda m: None)
    assert not (tmp_path / "out").exists()

    def nothing_listed(*args, **kwargs):
        raise BudgetError("no genotype the landing can list meets every budget; raise one of them")

    monkeypatch.setattr(DartsSpace, "landing_candidates", nothing_listed)
    with pytest.raises(BudgetError, match="no genotype"):
        land_search(tmp_path / "search", {"max_params": 190_000}, tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(DartsSpace, "landing_candidates", SearchSpace.landing_candidates)
    with pytest.raises(ConfigError, match="space cannot"):
        land_search(tmp_path / "search", {"max_params": 190_000}, tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_land_refuses_mixing_weights_of_another_shape_in_one_line(tmp_path):
    folder = tmp_path / "darts"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SearchConfig(dataset="digits", max_params=200_000).to_dict()))
    (folder / "result.json").write_text(json.dumps({"mixing_weights": {"alpha_normal": [[1.0]]},
                                                    "search_seconds": 1}))
    out = subprocess.run([sys.executable, "-m", "dcanas", "land", str(folder), "--max-params", "180K",
                          "--run-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "do not fit its darts search" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
