"""Zero-cost proxies and --rerank: the scores' definitions, the candidates, the choice, and bad input."""
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from dcanas.constraint import Budget
from dcanas.errors import ConfigError
from dcanas.constraint import budget_share
from dcanas.landing import LANDING_BAND
from dcanas.proxies import MECO_IMAGES, PROXIES, meco_score, naswot_score, proxy_score, rank_sum_choice, rerank, \
    synflow_score, votes_on_budget
from dcanas.search_config import SearchConfig
from dcanas.spaces.nb201.arch import Arch
from dcanas.spaces.nb201.cost import build_nb201_cost_table
from dcanas.spaces.nb201.network import NB201Setting
from dcanas.spaces.nb201.ops import NONE_INDEX
from dcanas.spaces.nb201.space import FILL_FLOORS, NB201Space, _enumeration_costs, _enumeration_digits


def test_synflow_is_the_sum_of_weight_times_gradient_of_the_all_ones_output_with_absolute_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False))
    before = [p.detach().clone() for p in net.parameters()]
    w, v = net[0].weight.detach().double().abs(), net[1].weight.detach().double().abs()
    # R = sum_j |v_j| sum_i |W_ji|: each weight's |theta dR/dtheta| sums to R once per layer
    r = float((v @ w).sum())
    assert proxy_score("synflow", net, torch.zeros(4, 3)) == pytest.approx(math.log(2 * r), rel=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # a copy was scored
    assert synflow_score(net, torch.zeros(4, 3)) == pytest.approx(math.log(2 * r), rel=1e-9)  # in place
    assert net[0].weight.dtype == torch.float64 and (net[0].weight >= 0).all()


def test_naswot_is_the_log_determinant_of_the_activation_agreement_kernel():
    net = nn.Sequential(nn.Flatten(), nn.ReLU())
    images = torch.tensor([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])  # codes 10, 11, 00
    # agreements: K = [[2, 1, 1], [1, 2, 0], [1, 0, 2]], det = 2*4 - 1*2 + 1*(-2) = 4
    assert proxy_score("naswot", net, images) == pytest.approx(math.log(4.0))
    with pytest.raises(ConfigError, match="ReLU"):
        naswot_score(nn.Flatten(), images)


def test_meco_is_the_least_eigenvalue_of_the_channel_correlation_summed_over_layers():
    # two zero-mean, uncorrelated channels (over the 4 pixels): correlation I, least eigenvalue 1
    images = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]], [[1.0, 1.0], [-1.0, -1.0]]]])
    conv = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    assert proxy_score("meco", conv, images) == pytest.approx(1.0)
    # a second layer that copies channel 0 into both: correlation all ones (least eigenvalue 0); sum 1 + 0
    copy_first = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        copy_first.weight.copy_(torch.tensor([[1.0, 0.0], [2.0, 0.0]]).view(2, 2, 1, 1))
    assert proxy_score("meco", nn.Sequential(conv, copy_first), images) == pytest.approx(1.0)
    # a constant channel has no correlation: it counts as 0, so [[1, 0], [0, 0]] has least eigenvalue 0
    flat = torch.cat([images[:, :1], torch.ones_like(images[:, :1])], 1)
    assert meco_score(conv, flat) == pytest.approx(0.0)
    # only the first MECO_IMAGES images are scored; a network without such layers is refused
    batch = torch.randn(MECO_IMAGES + 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    assert proxy_score("meco", conv, batch) == proxy_score("meco", conv, batch[:MECO_IMAGES])
    with pytest.raises(ConfigError, match="meco proxy needs"):
        meco_score(nn.Flatten(), images)


def test_proxies_are_registered_deterministic_and_unknown_names_are_refused():
    assert set(PROXIES.names()) == {"synflow", "naswot", "meco"}
    net, images = NB201Space().build_network(Arch(("nor_conv_3x3",) * 6), NB201Setting(image_size=8)), \
        torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for name in PROXIES.names():
        assert proxy_score(name, net, images) == proxy_score(name, net, images)
    with pytest.raises(ConfigError, match="unknown proxy 'jacov'.*synflow"):
        proxy_score("jacov", net, images)


def test_proxies_prefer_convolutions_to_parameter_free_cells():
    """The property --rerank relies on: a cell of 3x3 convolutions scores above one of skips and pools."""
    space, setting = NB201Space(), NB201Setting(image_size=16)
    images = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    conv = space.build_network(Arch(("nor_conv_3x3",) * 6), setting)
    cheap = space.build_network(Arch(("skip_connect", "avg_pool_3x3") * 3), setting)
    for name in PROXIES.names():
        assert proxy_score(name, conv, images) > proxy_score(name, cheap, images), name


def test_landing_candidates_are_the_alphas_best_in_the_fill_band_best_first():
    space, table = NB201Space(), build_nb201_cost_table()
    digits, params = _enumeration_digits(), _enumeration_costs(table, "params")
    alpha = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    logp = torch.log_softmax(alpha, -1).numpy()
    score = lambda arch: float(logp[range(6), list(arch.op_indices)].sum())  # noqa: E731
    budget = Budget("params", 0.5 * sum(table.bounds("params")))
    top = space.landing_candidates([alpha], table, [budget], 7, True)
    assert len(top) == 7 and len(set(top)) == 7
    assert top[0] == space.fill(Arch(("skip_connect",) * 6), [alpha], table, [budget])[0]  # the fill's own choice
    assert [score(a) for a in top] == sorted((score(a) for a in top), reverse=True)
    band = (digits != NONE_INDEX).all(1) & (params <= budget.limit) & (params >= FILL_FLOORS[0] * budget.limit)
    in_band = sorted((logp[range(6), d].sum() for d in digits[band]), reverse=True)
    assert [score(a) for a in top] == pytest.approx(in_band[:7], abs=1e-5)
    # without a budget: the best none-free architectures, led by the supernet's own derivation
    free = space.landing_candidates([alpha], table, [], 3, True)
    assert free[0] == space.derive([alpha], None) and not any(a.has_none() for a in free)
    # without the fill: anywhere within budget
    anywhere = space.landing_candidates([alpha], table, [budget], 3, False)
    assert all(table.genotype_cost(a)["params"] <= budget.limit for a in anywhere)
    assert score(anywhere[0]) >= score(top[0])


def test_rerank_takes_the_best_sum_of_alpha_and_proxy_ranks_ties_to_the_alphas():
    space, setting = NB201Space(), NB201Setting(image_size=8)
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    skips, conv3, conv1 = Arch(("skip_connect",) * 6), Arch(("nor_conv_3x3",) * 6), Arch(("nor_conv_1x1",) * 6)
    chosen, records = rerank(space, [skips, conv3, conv1], setting, "synflow", images, seed=0)
    scores = [r["scores"]["synflow"] for r in records]
    assert scores[1] > scores[2] > scores[0]  # synflow: 3x3 over 1x1 over skips
    # alpha ranks 1, 2, 3 and proxy ranks 3, 1, 2: sums favour the all-3x3 cell
    assert [r["alpha_rank"] for r in records] == [1, 2, 3] and [r["proxy_rank"] for r in records] == [3, 1, 2]
    assert [r["ranks"] for r in records] == [{"synflow": 3}, {"synflow": 1}, {"synflow": 2}]
    assert chosen == conv3 and [r.get("chosen", False) for r in records] == [False, True, False]
    assert records[1]["genotype"] == space.to_text(conv3)
    # the same seed gives the same networks and scores
    assert rerank(space, [skips, conv3, conv1], setting, "synflow", images, seed=0)[1] == records
    # first by the alphas, last by the proxy, and the other way round: a tie, which goes to the alphas' choice
    assert rerank(space, [skips, conv3], setting, "synflow", images, seed=0)[0] == skips
    assert rerank(space, [conv3], setting, "synflow", images, seed=0)[0] == conv3


def test_rank_sum_choice_adds_the_ranks_and_breaks_ties_by_the_alphas():
    assert rank_sum_choice([[1.0, 3.0, 2.0]]) == (1, [[3, 1, 2]])  # alpha + proxy rank: 1 + 3, 2 + 1, 3 + 2
    assert rank_sum_choice([[1.0, 2.0]]) == (0, [[2, 1]])  # 1 + 2 and 2 + 1: a tie, to the alphas' first
    assert rank_sum_choice([[5.0, 5.0, 9.0]]) == (0, [[3, 3, 1]])  # equal scores share the worse rank; 1 + 3 ties 3 + 1
    assert rank_sum_choice([[4.0]]) == (0, [[1]])
    # two proxies: 1 + 3 + 1, 2 + 1 + 3, 3 + 2 + 2 -> the first (5 against 6 and 7)
    assert rank_sum_choice([[1.0, 3.0, 2.0], [9.0, 1.0, 5.0]]) == (0, [[3, 1, 2], [1, 3, 2]])
    # a second proxy that agrees with the first moves the choice off the alphas' first
    assert rank_sum_choice([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]]) == (1, [[3, 1, 2], [3, 1, 2]])


def test_rerank_with_two_proxies_adds_both_ranks_and_records_each():
    space, setting = NB201Space(), NB201Setting(image_size=8)
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    archs = [Arch(("skip_connect",) * 6), Arch(("nor_conv_3x3",) * 6), Arch(("nor_conv_1x1",) * 6)]
    chosen, records = rerank(space, archs, setting, "synflow+meco", images, seed=0)
    for name in ("synflow", "meco"):  # each proxy's scores are the ones it gives alone, on the same networks
        alone = rerank(space, archs, setting, name, images, seed=0)[1]
        assert [r["scores"][name] for r in records] == [r["scores"][name] for r in alone]
        assert [r["ranks"][name] for r in records] == [r["proxy_rank"] for r in alone]
    sums = [r["alpha_rank"] + r["proxy_rank"] for r in records]
    assert all(r["proxy_rank"] == sum(r["ranks"].values()) for r in records)
    assert records[archs.index(chosen)]["chosen"] and sums[archs.index(chosen)] == min(sums)
    assert archs.index(chosen) == min(range(3), key=lambda i: (sums[i], i))


def test_the_budget_voter_ranks_each_candidates_share_of_the_budget_beside_the_proxies():
    space, setting, table = NB201Space(), NB201Setting(image_size=8), build_nb201_cost_table()
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    archs = [Arch(("skip_connect",) * 6), Arch(("nor_conv_3x3",) * 6), Arch(("nor_conv_1x1",) * 6)]
    budgets = [Budget("params", 2e6), Budget("flops", 4e8)]
    params = [table.genotype_cost(a)["params"] for a in archs]
    flops = [table.genotype_cost(a)["flops"] for a in archs]
    shares = [budget_share(table, a, budgets) for a in archs]
    assert shares == pytest.approx([(p / 2e6 + f / 4e8) / 2 for p, f in zip(params, flops)])  # the mean of cost/limit
    chosen, records = rerank(space, archs, setting, "synflow+budget", images, seed=0, budget_use=shares)
    assert [r["ranks"]["budget"] for r in records] == [3, 1, 2]  # the 3x3 cell uses most of the budget
    assert [r["scores"]["budget"] for r in records] == shares
    synflow = rerank(space, archs, setting, "synflow", images, seed=0)[1]
    assert [r["scores"]["synflow"] for r in records] == [r["scores"]["synflow"] for r in synflow]
    sums = [r["alpha_rank"] + r["ranks"]["synflow"] + r["ranks"]["budget"] for r in records]
    assert records[archs.index(chosen)]["chosen"] and archs.index(chosen) == min(range(3), key=lambda i: (sums[i], i))
    # the budget alone decides against the alphas' order: 1 + 3, 2 + 1, 3 + 2
    assert rerank(space, archs, setting, "budget", None, seed=0, budget_use=shares)[0] == archs[1]
    # no budget (an unconstrained search): the voter drops out, the proxies vote as without it
    assert rerank(space, archs, setting, "synflow+budget", images, seed=0)[1] == synflow
    alone, records = rerank(space, archs, setting, "budget", None, seed=0)
    assert alone == archs[0] and records[0]["chosen"] and records[0]["ranks"] == {}
    assert votes_on_budget("meco+budget") and not votes_on_budget("synflow+meco") and not votes_on_budget("none")


def test_with_the_budget_voter_the_candidates_fill_the_whole_landing_band():
    """The soft vote replaces the floors' "top of the budget first": every none-free cell using 85-100 %."""
    space, table = NB201Space(), build_nb201_cost_table()
    digits, params = _enumeration_digits(), _enumeration_costs(table, "params")
    alpha = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    budget = Budget("params", 700_000)  # its 85-100 % band holds 559,386..671,386 parameters
    whole = space.landing_candidates([alpha], table, [budget], 100_000, True, whole_band=True)
    band = (digits != NONE_INDEX).all(1) & (params <= budget.limit) & (params >= LANDING_BAND * budget.limit)
    assert len(whole) == int(band.sum()) == len(set(whole))
    uses = [table.genotype_cost(a)["params"] / budget.limit for a in whole]
    assert min(uses) < FILL_FLOORS[0] and min(uses) >= LANDING_BAND and max(uses) <= 1.0
    tight = space.landing_candidates([alpha], table, [budget], 100_000, True)
    assert len(tight) < len(whole) and set(tight) <= set(whole)
    assert whole[:5] == space.landing_candidates([alpha], table, [budget], 5, True, whole_band=True)


def test_config_refuses_an_unknown_proxy_a_space_without_candidates_and_a_bad_top(monkeypatch):
    with pytest.raises(ConfigError, match="unknown proxy"):
        SearchConfig(space="nb201", rerank="zen").validate()
    from dcanas.spaces.base import SearchSpace
    from dcanas.spaces.darts.space import DartsSpace

    monkeypatch.setattr(DartsSpace, "landing_candidates", SearchSpace.landing_candidates)  # a space with no list
    with pytest.raises(ConfigError, match="cannot list; use --rerank none"):
        SearchConfig(space="darts", rerank="synflow").validate()
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="--rerank-top"):
        SearchConfig(space="nb201", rerank="synflow", rerank_top=0).validate()
    SearchConfig(space="darts", rerank="none").validate()  # off is fine anywhere
    # a run saved before --rerank resumes as it ran: the alphas alone
    old = {k: v for k, v in SearchConfig(space="nb201").to_dict().items() if not k.startswith("rerank")}
    assert SearchConfig.from_dict(old).rerank_proxy() is None
    assert SearchConfig(space="nb201", rerank="naswot").rerank_proxy() == "naswot"
    SearchConfig(space="nb201", rerank="meco+synflow").validate()  # several proxies, joined by '+'
    with pytest.raises(ConfigError, match="unknown proxy 'zen'"):
        SearchConfig(space="nb201", rerank="synflow+zen").validate()
    with pytest.raises(ConfigError, match="names a proxy twice"):
        SearchConfig(space="nb201", rerank="meco+meco").validate()
    SearchConfig(space="nb201", rerank="synflow+budget").validate()  # the budget's share votes like a proxy
    with pytest.raises(ConfigError, match="unknown proxy 'zen'.* or budget"):
        SearchConfig(space="nb201", rerank="budget+zen").validate()
    with pytest.raises(ConfigError, match="names a proxy twice"):
        SearchConfig(space="nb201", rerank="budget+meco+budget").validate()


@pytest.mark.parametrize("flags, message", [
    (["--space", "darts", "--rerank", "synflow", "--max-skips", "2"], "--max-skips"),
    (["--space", "nb201", "--rerank", "zen"], "unknown proxy"),
    (["--space", "nb201", "--rerank", "synflow+synflow"], "names a proxy twice"),
    (["--space", "nb201", "--rerank", "synflow", "--rerank-top", "0"], "--rerank-top"),
])
def test_cli_bad_rerank_is_one_line_exit_2_and_writes_nothing(tmp_path, flags, message):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "dcanas", "search", "--dataset", "synthetic", "--max-steps", "1",
                           "--run-dir", str(run), "--quiet", *flags], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not run.exists()


def test_search_with_rerank_lands_the_proxys_choice_and_a_consensus_of_it_lands_the_same(tmp_path, monkeypatch):
    from dcanas.repeats import consensus_search
    from dcanas.search_loop import prepare_search, run_search

    config = SearchConfig(space="nb201", dataset="synthetic", max_params=4e5, cells=3, channels=8, batch_size=16,
                          epochs=1, max_steps=3, device="cpu", seed=0, rerank="naswot", rerank_top=4)
    result = run_search(config, tmp_path / "run", progress=False, log=lambda m: None)
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["rerank"]["proxy"] == "naswot" and len(record["rerank"]["candidates"]) == 4
    chosen = [c for c in record["rerank"]["candidates"] if c.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["genotype"] == record["genotype"] == str(result.genotype)
    best = min(record["rerank"]["candidates"], key=lambda c: (c["alpha_rank"] + c["proxy_rank"], c["alpha_rank"]))
    assert chosen[0] is best or chosen[0] == best
    assert result.budgets["params"]["ok"] and "naswot proxy" in (tmp_path / "run" / "report.md").read_text()
    # the consensus of this one search (what --repeats lands) scores the same candidates on the same images
    saved = SearchConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    import dcanas.threads

    counts, real = [], dcanas.threads.use_threads
    monkeypatch.setattr(dcanas.threads, "use_threads", lambda n: (counts.append(n), real(n)))
    before = torch.get_num_threads()
    again = consensus_search(saved, [record["mixing_weights"]], prepare_search(saved), tmp_path / "run")
    assert again.genotype == result.genotype and again.rerank == record["rerank"]
    # scored on the searches' own thread count, then the caller's is back
    assert counts == [saved.threads, before] and torch.get_num_threads() == before


def test_the_default_landing_votes_on_the_budget_share_across_the_whole_band(tmp_path, monkeypatch):
    from dcanas.search_loop import prepare_search, run_search

    config = SearchConfig(space="nb201", dataset="synthetic", max_params=4e5, cells=3, channels=8, batch_size=16,
                          epochs=1, max_steps=3, device="cpu", seed=0, rerank_top=30)
    run_search(config, tmp_path / "run", progress=False, log=lambda m: None)
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["rerank"]["proxy"] == "synflow+meco+budget"
    # the default is written out, so the run resumes and lands with this rule after the default changes
    assert json.loads((tmp_path / "run" / "config.json").read_text())["rerank"] == "synflow+meco+budget"
    candidates = record["rerank"]["candidates"]
    assert all(set(c["ranks"]) == {"synflow", "meco", "budget"} for c in candidates)
    shares = [c["scores"]["budget"] for c in candidates]
    assert min(shares) >= LANDING_BAND and max(shares) <= 1.0 and record["budgets"]["params"]["ok"]
    assert record["budgets"]["params"]["value"] / 4e5 == pytest.approx(
        next(c for c in candidates if c.get("chosen"))["scores"]["budget"])
    assert "the share of the budget each uses" in (tmp_path / "run" / "report.md").read_text()
    # the record keeps what --rerank none lands from the same search, for comparison
    alone = run_search(SearchConfig(**{**config.to_dict(), "rerank": "none"}), tmp_path / "none", progress=False,
                       log=lambda m: None)
    assert record["rerank"]["without_rerank"] == str(alone.genotype)
    # the candidates are the whole 85-100 % band, not the floors' tightest band (the budget alone: no networks,
    # so no probe images either)
    import dcanas.search_loop

    monkeypatch.setattr(dcanas.search_loop, "probe_batch", lambda *a: pytest.fail("probe images built"))
    run_search(SearchConfig(**{**config.to_dict(), "rerank": "budget", "rerank_top": 100_000}), tmp_path / "budget",
               progress=False, log=lambda m: None)
    budget_record = json.loads((tmp_path / "budget" / "result.json").read_text())
    listed = budget_record["rerank"]["candidates"]
    # --repeats' consensus of that search lands it the same way, again without probe images
    from dcanas.repeats import consensus_search

    saved = SearchConfig.from_dict(json.loads((tmp_path / "budget" / "config.json").read_text()))
    again = consensus_search(saved, [budget_record["mixing_weights"]], prepare_search(saved), tmp_path / "budget")
    assert str(again.genotype) == budget_record["genotype"]
    # (the averaged weights are softmaxes read back from JSON: ties deep in the list may order differently)
    assert {c["genotype"] for c in again.rerank["candidates"]} == {c["genotype"] for c in listed}
    _, _, table, budgets = prepare_search(config)
    whole = NB201Space().landing_candidates([torch.zeros(6, 5)], table, budgets, 100_000, True, whole_band=True)
    tight = NB201Space().landing_candidates([torch.zeros(6, 5)], table, budgets, 100_000, True)
    assert len(listed) == len(whole) > len(tight)
    assert {c["genotype"] for c in listed} == {NB201Space().to_text(a) for a in whole}


def test_the_budget_voter_alone_without_a_budget_lands_the_alphas_choice_and_reports_it(tmp_path, capsys):
    from dcanas.search_loop import run_search

    config = SearchConfig(space="nb201", dataset="synthetic", cells=3, channels=8, batch_size=16, epochs=1,
                          max_steps=2, device="cpu", seed=0, rerank="budget", rerank_top=5)
    result = run_search(config, tmp_path / "run", progress=False, log=lambda m: None)
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    chosen = [c for c in record["rerank"]["candidates"] if c.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["alpha_rank"] == 1 and chosen[0]["ranks"] == {}
    assert record["genotype"] == str(result.genotype) == record["rerank"]["candidates"][0]["genotype"]
    assert "nothing else (no budget to share)" in (tmp_path / "run" / "report.md").read_text()
    import argparse
    from dcanas.commands.search import print_search_result

    print_search_result(argparse.Namespace(json=False, quiet=False), record)
    summary = capsys.readouterr().out
    assert "reranked  by budget: nothing voted (no budget to share)" in summary and "of 5" not in summary


def test_a_search_saved_before_the_default_was_written_out_lands_with_the_rule_it_ran_with(tmp_path):
    from dcanas.reland import land_search
    from dcanas.search_loop import run_search

    config = SearchConfig(space="nb201", dataset="synthetic", cells=3, channels=8, batch_size=16, epochs=1,
                          max_steps=2, device="cpu", seed=0, rerank="synflow", rerank_top=4)
    run_search(config, tmp_path / "old", progress=False, log=lambda m: None)
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    (tmp_path / "old" / "config.json").write_text(json.dumps({**saved, "rerank": None}))  # as older versions saved
    landed = land_search(tmp_path / "old", {"max_params": 4e5}, tmp_path / "landed", log=lambda m: None)
    assert landed.rerank["proxy"] == "synflow"  # the search's own rule, not today's default
    assert json.loads((tmp_path / "landed" / "config.json").read_text())["rerank"] == "synflow"


def test_a_saved_config_reused_in_another_space_takes_that_spaces_landing_rule(tmp_path):
    from dcanas.search_config import make_search_config

    saved = SearchConfig(space="nb201", dataset="synthetic").with_rerank_pinned().to_dict()
    assert saved["rerank"] == "synflow+meco+budget"
    # the pinned rule belongs to NB201: the DARTS space (which cannot rerank) takes its own default, no refusal
    darts = make_search_config("synthetic", base=saved, space="darts")
    darts.validate()
    assert darts.rerank is None and darts.rerank_proxy() is None
    assert make_search_config("synthetic", base=saved).rerank == "synflow+meco+budget"  # same space: kept
    typed = make_search_config("synthetic", base={**saved, "space": "darts", "rerank": "none"}, space="nb201",
                               rerank="synflow")
    assert typed.rerank == "synflow"  # what was typed always wins


def test_lug_points_land_what_the_search_derives():
    from dcanas.lug import point_config

    point = point_config(SearchConfig(space="nb201", max_params=1e6), "params", 3e5, 1, 1e6)
    assert point.rerank_proxy() is None and point.fill_budget is False and point.repair is False
    assert SearchConfig(space="nb201").rerank_proxy() == "synflow+meco+budget" and SearchConfig(space="darts").rerank_proxy() is None
