"""The NAS-Bench-201 space through the shared search loop: adapter, repair, describe, latency-constrained search."""
import dataclasses
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dcanas.constraint import Budget, Constraint
from dcanas.errors import BudgetError, ConfigError, RunDirError
from dcanas.spaces.nb201.bench import latency_cost_table, load_nb201_table
from dcanas.spaces import SPACES
from dcanas.spaces.nb201.arch import NUM_ARCHS, Arch, arch_from_enumeration, parse_arch, random_arch
from dcanas.spaces.nb201.cost import build_nb201_cost_table
from dcanas.spaces.nb201.network import NB201Setting
from dcanas.spaces.nb201.ops import NONE_INDEX, PRIMITIVES
from dcanas.spaces.nb201.space import NB201Space

TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"
needs_table = pytest.mark.skipif(not TABLE.is_file(), reason=f"{TABLE} is absent (shared NAS-Bench-201 data)")
ALL_CONV3 = Arch(("nor_conv_3x3",) * 6)



def config(**kw):
    """A stand-in for SearchConfig with the fields the adapter reads (works before and after the generic loop)."""
    base = {"dataset": "synthetic", "eval_cells": None, "eval_channels": None, "cells": 8, "channels": 16,
            "bottleneck": 4, "weight_sharing": True, "derived_cells": True, "latency_table": None,
            "latency_device": None, "bench_table": None, "max_params": None, "max_flops": None, "max_latency": None,
            "remedy": "none"}
    base.update(kw)
    ns = SimpleNamespace(**base)
    ns.budgets = lambda: [Budget(m, float(v)) for m, v in (("params", ns.max_params), ("flops", ns.max_flops),
                                                            ("latency", ns.max_latency)) if v is not None]
    return ns


@pytest.fixture(scope="module")
def pixel3():
    """The pixel3 cost table as a search uses it: the fitted model plus the measured latencies."""
    if not TABLE.is_file():
        pytest.skip(f"{TABLE} is absent (shared NAS-Bench-201 data)")
    return latency_cost_table("pixel3", load_nb201_table(TABLE), exclude_none=True, measured=True)


# -- the adapter ------------------------------------------------------------------------------

def test_registered_and_settings():
    space = SPACES.get("nb201")
    assert isinstance(space, NB201Space) and space.name == "nb201" and space.alpha_names == ("alpha",)
    assert space.eval_setting(config(), 3, 10, 32) == NB201Setting()  # the benchmark's CIFAR-10 network
    assert space.eval_setting(config(eval_cells=6, eval_channels=8), 1, 7, 16) == NB201Setting(8, 2, 7, 1, 16)
    with pytest.raises(ConfigError, match="multiple of 3"):
        space.eval_setting(config(eval_cells=5), 3, 10, 32)
    auto = space.eval_setting(config(eval_channels="auto", max_params=500_000), 3, 10, 32)
    low, high = build_nb201_cost_table(auto).bounds("params")
    assert low + 0.3 * (high - low) <= 500_000 and auto.channels > 4
    with pytest.raises(ConfigError, match="latency-device"):
        space.cost_table(NB201Setting(), config(max_latency=10.0))
    with pytest.raises(ConfigError, match="latency-device"):
        space.cost_table(NB201Setting(), config(latency_table="ops.json"))
    net = space.build_supernet(config(cells=8), 3, 10)
    assert net.config.cells_per_stage == 3 and [p.shape for p in net.arch_parameters()] == [(6, 5)]


def test_text_dict_costs_and_diagram(tmp_path):
    space = NB201Space()
    arch = parse_arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    assert space.to_text(arch) == str(arch)
    d = space.to_dict(arch)
    assert d["index"] == 1 and d["edges"]["2<-1"] == "avg_pool_3x3" and len(d["edges"]) == 6
    cost = space.deployed_cost(ALL_CONV3, NB201Setting())
    assert cost["params"] == 1_531_546 and cost["flops_nb201"] == 220_119_690  # the benchmark's own counts
    table = build_nb201_cost_table()
    assert table.genotype_cost(ALL_CONV3)["params"] == cost["params"]  # the table is exact
    assert [m.tolist() for m in table.kept_edges(arch)] == [[1.0] * 6]
    assert table.kept_edges(parse_arch("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|"))[0].sum() == 1
    assert "--channels 8" in space.suggest(table, Budget("params", 20_000))  # below the 16-channel floor
    assert "change the budget" in space.suggest(table, Budget("params", 1e12))
    space.write_diagrams(arch, tmp_path)
    dot = (tmp_path / "cell.dot").read_text()
    assert dot.count("->") == 6 and 'label="avg_pool_3x3"' in dot and '"in" [fillcolor=darkseagreen2]' in dot
    assert (tmp_path / "cell.png").is_file()


# -- repair -----------------------------------------------------------------------------------

def test_repair_meets_a_params_budget_through_the_alpha_ranking():
    space, table = NB201Space(), build_nb201_cost_table()
    alpha = torch.zeros(6, 5)
    alpha[:, PRIMITIVES.index("nor_conv_3x3")] = 3.0
    alpha[:, PRIMITIVES.index("nor_conv_1x1")] = 2.0  # the next choice everywhere
    alpha[0, PRIMITIVES.index("nor_conv_1x1")] = -3.0  # except on edge 1<-0: pool, then skip
    alpha[0, PRIMITIVES.index("avg_pool_3x3")] = 1.0
    limit = table.genotype_cost(ALL_CONV3)["params"] - 1
    fixed, changes = space.repair(ALL_CONV3, [alpha], table, [Budget("params", limit)])
    assert table.genotype_cost(fixed)["params"] <= limit and len(changes) == 1
    assert "none" not in fixed.ops and fixed.ops.count("nor_conv_3x3") == 5
    # within budget already: unchanged
    assert space.repair(ALL_CONV3, [alpha], table, [Budget("params", limit + 1)]) == (ALL_CONV3, [])
    # a tight budget: every edge ends cheap, still no `none`, and the change log names each edge
    low = table.bounds("params")[0]
    fixed, changes = space.repair(ALL_CONV3, [alpha], table, [Budget("params", low)])
    assert table.genotype_cost(fixed)["params"] == low and "none" not in fixed.ops
    assert all(c.startswith("edge ") and " -> " in c for c in changes)
    with pytest.raises(BudgetError):
        space.repair(ALL_CONV3, [alpha], table, [Budget("params", low - 1)])


def test_repair_takes_a_cheaper_convolution_before_a_skip():
    """Conv 1x1 saves less than a skip per step, but a parametric op always comes first."""
    space, table = NB201Space(), build_nb201_cost_table()
    alpha = torch.zeros(6, 5)
    alpha[:, PRIMITIVES.index("nor_conv_3x3")] = 3.0
    alpha[:, PRIMITIVES.index("nor_conv_1x1")] = 0.5
    conv1_on_edge0 = Arch(("nor_conv_1x1",) + ("nor_conv_3x3",) * 5)
    limit = table.genotype_cost(conv1_on_edge0)["params"]
    fixed, changes = space.repair(ALL_CONV3, [alpha], table, [Budget("params", limit)])
    assert table.genotype_cost(fixed)["params"] <= limit
    assert sorted(fixed.ops) == sorted(conv1_on_edge0.ops)  # one conv 1x1, not a skip
    assert len(changes) == 1 and changes[0].endswith("-> nor_conv_1x1")


def test_repair_meets_both_budgets_for_random_alphas():
    space, table = NB201Space(), build_nb201_cost_table()
    rng = random.Random(0)
    for seed in range(15):
        alpha = torch.randn(6, 5, generator=torch.Generator().manual_seed(seed))
        start = random_arch(rng, allow_none=False)
        budgets = [Budget("params", rng.uniform(*table.bounds("params"))),
                   Budget("flops", rng.uniform(*table.bounds("flops")))]
        try:
            fixed, _ = space.repair(start, [alpha], table, budgets)
        except BudgetError:  # two random budgets need not be jointly reachable: check by brute force
            ok = [a for a in (arch_from_enumeration(n) for n in range(NUM_ARCHS)) if not a.has_none()
                  and all(table.genotype_cost(a)[b.metric] <= b.limit for b in budgets)]
            assert not ok
            continue
        cost = table.genotype_cost(fixed)
        assert all(cost[b.metric] <= b.limit for b in budgets) and "none" not in fixed.ops


def test_repair_falls_back_when_no_single_change_helps():
    """Measured costs are not additive: a plateau where no one-edge change saves anything."""
    space, table = NB201Space(), build_nb201_cost_table()
    table.add_per_edge_metric("latency", np.ones((6, 5)), 0.0)
    measured = np.full(NUM_ARCHS, 10.0)
    target = parse_arch("|skip_connect~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
    cheap_but_unlikely = parse_arch("|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|")
    from dcanas.spaces.nb201.arch import enumeration_index
    measured[enumeration_index(target)] = 1.0
    measured[enumeration_index(cheap_but_unlikely)] = 1.0
    table.attach_measured("latency", measured)
    alpha = torch.zeros(6, 5)
    for e, o in enumerate(target.op_indices):
        alpha[e, o] = 1.0  # the alphas prefer the target over the all-pool cell
    fixed, changes = space.repair(ALL_CONV3, [alpha], table, [Budget("latency", 5.0)])
    assert fixed == target and "best-scored" in changes[-1]


@needs_table
def test_repair_holds_against_the_measured_latency_not_the_fitted_model(pixel3):
    """The fitted model errs by up to ~7 ms on pixel3; a budget is about the measurement."""
    space = NB201Space()
    rng = random.Random(1)
    under = over = 0
    for _ in range(400):
        arch = random_arch(rng, allow_none=False)
        model, true = pixel3.additive_cost(arch)["latency"], pixel3.genotype_cost(arch)["latency"]
        if abs(model - true) < 1.0:
            continue
        limit = (model + true) / 2  # the model and the measurement disagree about this budget
        fixed, changes = space.repair(arch, [torch.zeros(6, 5)], pixel3, [Budget("latency", limit)])
        assert pixel3.genotype_cost(fixed)["latency"] <= limit
        if true > model:  # the model says it fits, the device says no: repaired anyway
            assert changes and fixed != arch
            under += 1
        else:  # the model says too slow, the device says fine: left alone
            assert fixed == arch and not changes
            over += 1
    assert under and over


@needs_table
def test_measured_table_costs_bounds_and_constraint(pixel3):
    bench = load_nb201_table(TABLE)
    for index in (0, 1, 6111):
        assert pixel3.genotype_cost(index)["latency"] == bench.latency_of(index, "pixel3")
    ops = bench.op_indices()
    none_free = (ops != NONE_INDEX).all(axis=1)
    assert pixel3.bounds("latency") == (bench.latency["pixel3"][none_free].min(),
                                        bench.latency["pixel3"][none_free].max())
    # the constraint's value is the measured latency of the derived arch, its gradient the model's
    alpha = torch.randn(6, 5, generator=torch.Generator().manual_seed(3)).requires_grad_()
    arch = Arch.from_indices(alpha.detach().masked_fill(torch.arange(5) == NONE_INDEX, -1e9).argmax(1).tolist())
    con = Constraint(pixel3, [Budget("latency", 10.0)], "derived")
    (value,) = con.expected_costs([alpha], arch)
    assert float(value.detach()) == pytest.approx(bench.latency_of(arch, "pixel3"), rel=1e-6)
    (grad,) = torch.autograd.grad(value, [alpha])
    soft = pixel3.expected_cost(alpha, "latency", exclude_none=True)
    (want,) = torch.autograd.grad(soft, [alpha])
    torch.testing.assert_close(grad, want)


# -- describe ---------------------------------------------------------------------------------

@needs_table
def test_describe_gives_the_benchmark_truth():
    space = NB201Space()
    facts = space.describe(1, config(bench_table=str(TABLE), latency_device="pixel3"))
    assert facts["nb201_index"] == 1 and facts["latency_ms"] == {"pixel3": pytest.approx(17.2381)}
    assert facts["test_accuracy"]["cifar10"] == pytest.approx(93.66, abs=1e-6)
    assert set(facts["test_accuracy"]) == {"cifar10", "cifar100", "imagenet16-120"}
    # without a device: accuracies only; nothing is remembered between calls on the shared instance
    assert space.describe(1, config(bench_table=str(TABLE)))["latency_ms"] == {}
    space.cost_table(NB201Setting(), config(latency_device="raspi4", bench_table=str(TABLE)))
    assert space.describe(ALL_CONV3, config(bench_table=str(TABLE)))["latency_ms"] == {}


@needs_table
def test_describe_ranks_the_cell_against_random_ones_of_its_band():
    from dcanas.constraint import Budget
    from dcanas.spaces.nb201.bench import load_nb201_table
    from dcanas.spaces.nb201.cost import build_nb201_cost_table

    space, bench = NB201Space(), load_nb201_table(TABLE)
    ops = bench.op_indices()
    none_free = (ops != NONE_INDEX).all(axis=1)
    acc = bench.accuracy["cifar10"]
    # unconstrained: among all 4,096 none-free cells; the optimum beats all but itself
    best = int(bench.indices[np.flatnonzero(none_free)[acc[none_free].argmax()]])
    free = space.describe(best, config(bench_table=str(TABLE)))["against_random"]
    assert free["band"] is None and free["cells"] == 4 ** 6
    assert free["best"]["cifar10"] == pytest.approx(acc[none_free].max(), abs=1e-4)
    assert free["random_mean"]["cifar10"] == pytest.approx(acc[none_free].mean(), abs=1e-4)
    assert free["beats_pct"]["cifar10"] == pytest.approx(100 * (4 ** 6 - 0.5) / 4 ** 6, abs=0.01)
    # a parameter budget: the cells of 85-100 % of it, counted exactly, and the share beaten by brute force
    table = build_nb201_cost_table()
    params = table.all_arch_costs("params", ops)
    band = none_free & (params <= 700_000) & (params >= 0.85 * 700_000)
    arch = bench.archs[int(np.flatnonzero(band)[0])]
    facts = space.describe(arch, config(bench_table=str(TABLE)), table, [Budget("params", 700_000)])["against_random"]
    assert facts["band"] == [0.85, 1.0] and facts["cells"] == int(band.sum())
    mine = acc[bench.row(arch)]
    want = 100 * ((acc[band] < mine - 1e-9).sum() + 0.5 * (np.abs(acc[band] - mine) <= 1e-9).sum()) / band.sum()
    assert facts["beats_pct"]["cifar10"] == pytest.approx(want, abs=0.01)
    assert facts["random_mean"]["cifar10"] == pytest.approx(acc[band].mean(), abs=1e-4)


@needs_table
def test_describe_ranks_against_the_band_of_a_measured_latency_budget():
    from dcanas.constraint import Budget
    from dcanas.spaces.nb201.bench import latency_cost_table, load_nb201_table

    space, bench = NB201Space(), load_nb201_table(TABLE)
    table = latency_cost_table("pixel3", bench, measured=True, exclude_none=True)
    measured = bench.latency["pixel3"]
    none_free = (bench.op_indices() != NONE_INDEX).all(axis=1)
    band = none_free & (measured <= 20.0) & (measured >= 0.85 * 20.0)  # the band by the table's own measurements
    arch = bench.archs[int(np.flatnonzero(band)[0])]
    facts = space.describe(arch, config(bench_table=str(TABLE), latency_device="pixel3"), table,
                           [Budget("latency", 20.0)])
    assert facts["latency_ms"]["pixel3"] <= 20.0 and facts["against_random"]["cells"] == int(band.sum())


def test_describe_without_a_table_is_empty(tmp_path):
    space = NB201Space()
    assert space.describe(ALL_CONV3, config(bench_table=str(tmp_path / "missing.csv"))) == {}
    (tmp_path / "bad.csv").write_text("nothing,here\n1,2\n")
    assert space.describe(ALL_CONV3, config(bench_table=str(tmp_path / "bad.csv"), latency_device="pixel3")) == {}


# -- through the shared search loop ------------------------------------------------------------

def _generic_search():
    from dcanas.search_config import SearchConfig

    names = {f.name for f in dataclasses.fields(SearchConfig)}
    if not {"space", "latency_device", "bench_table"} <= names:
        pytest.skip("the space-generic search loop (SearchConfig.space/latency_device/bench_table) is not in yet")
    return SearchConfig


@needs_table
@pytest.mark.parametrize("limit", [6.0, 12.0])
def test_latency_constrained_search_lands_within_the_true_latency(tmp_path, limit):
    SearchConfig = _generic_search()
    from dcanas.search_loop import run_search

    cfg = SearchConfig(space="nb201", dataset="synthetic", max_latency=limit, latency_device="pixel3",
                       bench_table=str(TABLE), cells=3, channels=8, batch_size=16, epochs=1, max_steps=3,
                       device="cpu", seed=0, rerank_top=20)  # the default rerank, over 20 candidates (CI time)
    result = run_search(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    true = load_nb201_table(TABLE).latency_of(result.genotype, "pixel3")
    assert true <= limit, (str(result.genotype), true)
    assert not result.genotype.has_none() and (tmp_path / "run" / "cell.dot").is_file()
    assert result.budgets["latency"]["value"] == pytest.approx(true) and result.budgets["latency"]["ok"]
    # the report's benchmark facts: true accuracy and the measured latency on the search's device
    assert result.benchmark["latency_ms"] == {"pixel3": pytest.approx(true)}
    assert 10 < result.benchmark["test_accuracy"]["cifar10"] < 95


@needs_table
def test_budget_scope_landing_searches_as_unconstrained_and_lands_the_alphas_best_in_the_band(tmp_path):
    """--budget-scope landing: no budget term, so the search is the unconstrained one of the same seed (what lets
    one search serve every budget); the landing is the alphas' best architecture in the band, not a repair."""
    SearchConfig = _generic_search()
    from dcanas.search_loop import run_search

    common = dict(space="nb201", dataset="synthetic", bench_table=str(TABLE), cells=3, channels=8, batch_size=16,
                  epochs=1, max_steps=3, device="cpu", seed=3, rerank="none", threads=1)
    free = run_search(SearchConfig(**common), tmp_path / "free", progress=False, log=lambda m: None)
    landed = run_search(SearchConfig(**common, max_latency=7.0, latency_device="pixel3", budget_scope="landing"),
                        tmp_path / "landed", progress=False, log=lambda m: None)
    assert landed.mixing_weights == free.mixing_weights  # bit for bit: the budget never reached the search
    assert str(landed.raw_genotype) == str(free.raw_genotype) and landed.repairs == [] and landed.fills == []
    assert "lambda_latency" not in (tmp_path / "landed" / "metrics.csv").read_text()
    assert "acted at the landing only" in (tmp_path / "landed" / "report.md").read_text()
    space = NB201Space()
    landed_table = latency_cost_table("pixel3", load_nb201_table(TABLE), exclude_none=True, measured=True)
    alphas = [torch.log(torch.tensor(free.mixing_weights["alpha"]))]
    best = space.landing_candidates(alphas, landed_table, [Budget("latency", 7.0)], 1, True)[0]
    assert str(landed.genotype) == str(best)
    true = load_nb201_table(TABLE).latency_of(landed.genotype, "pixel3")
    assert 0.85 * 7.0 <= true <= 7.0 and landed.budgets["latency"]["ok"]
    # so one search serves every budget: `dcanas land` of the unconstrained search gives the same network
    from dcanas.reland import land_search

    relanded = land_search(tmp_path / "free", {"max_latency": 7.0, "latency_device": "pixel3"}, tmp_path / "re",
                           log=lambda m: None)
    assert str(relanded.genotype) == str(landed.genotype) and relanded.budgets == landed.budgets
    assert json.loads((tmp_path / "re" / "config.json").read_text())["budget_scope"] == "landing"
    before = sorted(p.name for p in (tmp_path / "re").iterdir())
    with pytest.raises(RunDirError, match="choose another --run-dir") as refused:  # a landing is never resumed
        land_search(tmp_path / "free", {"max_params": 500_000}, tmp_path / "re", log=lambda m: None)
    assert "--resume" not in str(refused.value) and sorted(p.name for p in (tmp_path / "re").iterdir()) == before
    # a constrained search of the same seed does see the budget: its multiplier is recorded
    run_search(SearchConfig(**common, max_latency=7.0, latency_device="pixel3"), tmp_path / "seen",
               progress=False, log=lambda m: None)
    assert "lambda_latency" in (tmp_path / "seen" / "metrics.csv").read_text()


def test_land_refuses_what_it_cannot_land_in_one_line_and_writes_nothing(tmp_path, capsys):
    from dcanas.cli import main
    from dcanas.search_config import SearchConfig

    darts = tmp_path / "darts"
    darts.mkdir()
    (darts / "config.json").write_text(json.dumps(SearchConfig(space="darts", max_params=200_000).to_dict()))
    (darts / "result.json").write_text(json.dumps({"mixing_weights": {"normal": [[1.0]]}, "search_seconds": 1}))
    old, nb = tmp_path / "old", tmp_path / "nb"
    for folder, result in ((old, {"search_seconds": 1}),
                           (nb, {"search_seconds": 1, "mixing_weights": {"alpha": [[0.2] * 5] * 6}})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(SearchConfig(space="nb201").to_dict()))
        (folder / "result.json").write_text(json.dumps(result))
    (tmp_path / "empty").mkdir()
    for argv, words in (([str(tmp_path / "none"), "--max-params", "1M"], "is not a folder"),
                        ([str(tmp_path / "empty"), "--max-params", "1M"], "holds no finished search"),
                        ([str(darts), "--max-params", "300K"], "do not fit its darts search"),
                        ([str(nb)], "give the budget"),
                        ([str(old), "--max-params", "1M"], "no final mixing weights"),
                        ([str(darts), "--max-params", "lots"], "--max-params")):
        try:  # in-process: the same exit status and stderr as the command, without a torch import each
            code = main(["land", *argv, "--run-dir", str(tmp_path / "out")])
        except SystemExit as stop:  # argparse's own refusals
            code = stop.code
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# -- fill: spend unused budget ------------------------------------------------------------------

def test_fill_spends_unused_budget_on_the_convolutions_the_alphas_rank_next():
    space, table = NB201Space(), build_nb201_cost_table()
    all_skip = Arch(("skip_connect",) * 6)
    alpha = torch.zeros(6, 5)
    alpha[:, PRIMITIVES.index("skip_connect")] = 3.0
    alpha[:, PRIMITIVES.index("nor_conv_1x1")] = 2.0  # the next choice everywhere...
    alpha[2, PRIMITIVES.index("nor_conv_3x3")] = 2.5  # ...but on edge 2 the 3x3
    one_conv3 = table.genotype_cost(Arch(("skip_connect",) * 2 + ("nor_conv_3x3",) + ("skip_connect",) * 3))
    budget = Budget("params", one_conv3["params"])  # room for exactly that one conv 3x3 (or several 1x1)
    filled, changes = space.fill(all_skip, [alpha], table, [budget])
    assert table.genotype_cost(filled)["params"] <= budget.limit
    assert changes and all("(unused budget)" in c for c in changes)
    assert all(op in ("skip_connect", "nor_conv_1x1", "nor_conv_3x3") for op in filled.ops)
    assert filled.ops[2] == "nor_conv_3x3" or filled.ops.count("nor_conv_1x1") >= 2
    # no room: unchanged; a full budget is never exceeded whatever the alphas
    assert space.fill(all_skip, [alpha], table, [Budget("params", table.genotype_cost(all_skip)["params"])]) \
        == (all_skip, [])
    rng = random.Random(0)
    for _ in range(10):
        arch, limit = random_arch(rng), rng.uniform(*table.bounds("params"))
        if table.genotype_cost(arch)["params"] > limit or "none" in arch.ops:
            continue
        filled, _ = space.fill(arch, [torch.randn(6, 5)], table, [Budget("params", limit)])
        assert table.genotype_cost(filled)["params"] <= limit


def test_exact_fill_takes_the_best_scored_architecture_in_the_tightest_band_that_has_enough():
    from dcanas.spaces.nb201.space import FILL_FLOORS, MIN_BAND_SIZE, _enumeration_costs, _enumeration_digits

    space, table = NB201Space(), build_nb201_cost_table()
    digits, params = _enumeration_digits(), _enumeration_costs(build_nb201_cost_table(), "params")
    assert list(FILL_FLOORS) == sorted(FILL_FLOORS, reverse=True)  # the top of the budget is looked at first
    rng = random.Random(1)
    floors_used = set()
    for _ in range(12):
        alpha = torch.randn(6, 5, generator=torch.Generator().manual_seed(rng.randrange(1000)))
        low, high = table.bounds("params")
        budget = Budget("params", rng.uniform(low, high))
        start = Arch(("skip_connect",) * 6)
        filled, changes = space.fill(start, [alpha], table, [budget])
        cost = table.genotype_cost(filled)["params"]
        assert cost <= budget.limit and "none" not in filled.ops
        # brute force: the first floor whose band holds MIN_BAND_SIZE architectures (the last: any), and nothing
        # in that band scores higher
        logp = torch.log_softmax(alpha, -1).numpy()
        for floor in FILL_FLOORS:
            band = (digits != NONE_INDEX).all(1) & (params <= budget.limit) & (params >= floor * budget.limit)
            if band.sum() >= MIN_BAND_SIZE or (floor == FILL_FLOORS[-1] and band.any()):
                floors_used.add(floor)
                assert cost >= floor * budget.limit
                best = max(logp[range(6), d].sum() for d in digits[band])
                assert logp[range(6), list(filled.op_indices)].sum() == pytest.approx(best, abs=1e-5)
                break
        assert all("(unused budget)" in c for c in changes)
    assert floors_used == set(FILL_FLOORS)  # these budgets reach every floor of the cascade


def test_a_band_too_small_to_choose_from_is_passed_over_for_the_next():
    """At 700K parameters only 15 none-free cells use 95-100 % (their best 93.28 %, the best in budget 94.31 %
    at 85-90 %): the landing looks in 90-100 % instead, with more than --rerank-top's 20 to choose among."""
    from dcanas.spaces.nb201.space import FILL_FLOORS, MIN_BAND_SIZE

    space, table = NB201Space(), build_nb201_cost_table()
    budget = Budget("params", 700_000)
    alpha = torch.zeros(6, 5)
    assert 0 < len(space.landing_candidates([alpha], table, [budget], 10_000, True)) != 15
    uses = [table.genotype_cost(a)["params"] / budget.limit
            for a in space.landing_candidates([alpha], table, [budget], 10_000, True)]
    assert len(uses) >= MIN_BAND_SIZE and min(uses) >= FILL_FLOORS[1] and max(uses) <= 1.0
    assert sum(u >= FILL_FLOORS[0] for u in uses) == 15  # the tight band is inside the one taken
    # where every band is small, the widest is taken, all of it
    from dcanas.spaces.nb201.space import _enumeration_costs, _enumeration_digits

    params = _enumeration_costs(table, "params")[(_enumeration_digits() != NONE_INDEX).all(1)]
    wide_sizes = {limit: int(((params <= limit) & (params >= FILL_FLOORS[-1] * limit)).sum()) for limit in set(params)}
    limit = next(limit for limit, n in sorted(wide_sizes.items()) if 0 < n < MIN_BAND_SIZE and
                 ((params <= limit) & (params >= FILL_FLOORS[0] * limit)).sum() < n)
    small = space.landing_candidates([alpha], table, [Budget("params", limit)], 10_000, True)
    assert len(small) == wide_sizes[limit]


def test_cli_search_prints_its_summary_and_train_says_nb201_is_not_trained_here(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "dcanas", "search", "--space", "nb201", "--dataset", "synthetic",
                           "--max-steps", "2", "--rerank-top", "20", "--run-dir", str(run), "--quiet"],
                          capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "network   15 cells x 16 channels" in done.stdout and "genotype  |" in done.stdout
    before = sorted(p.name for p in run.iterdir())
    refused = subprocess.run([sys.executable, "-m", "dcanas", "train", str(run), "--max-steps", "1",
                              "--run-dir", str(tmp_path / "train")], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--space nb201 search" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == before and not (tmp_path / "train").exists()



def test_both_spaces_cost_tables_follow_the_shared_contract():
    from dcanas.spaces.base import SpaceCostTable
    from dcanas.spaces.darts.cost import build_cost_table
    from dcanas.spaces.darts.network import eval_setting_for

    for table in (build_cost_table(eval_setting_for("digits")), build_nb201_cost_table()):
        assert isinstance(table, SpaceCostTable)
        assert {"params", "flops"} <= set(table.entries) and set(table.fixed) >= {"params", "flops"}
        low, high = table.bounds("params")
        assert 0 < low < high


@needs_table
def test_a_params_budget_that_demands_parameter_free_ops_is_noted_beside_a_latency_device(tmp_path):
    """The note's narrower widths are counted without the device's latency table (which holds one width):
    a latency device beside a tight params budget must not break the end of the search."""
    SearchConfig = _generic_search()
    from dcanas.search_loop import run_search

    result = run_search(SearchConfig(space="nb201", dataset="synthetic", bench_table=str(TABLE), cells=3, channels=8,
                                     batch_size=16, epochs=1, max_steps=2, device="cpu", seed=0, rerank="none",
                                     threads=1, max_params=240_000, max_latency=36.0, latency_device="pixel3"),
                        tmp_path / "run", progress=False, log=lambda m: None)
    (note,) = result.notes  # the params budget only: 36 ms holds any none-free cell on a Pixel 3 but the slowest
    assert note.startswith("--max-params 240,000") and "--channels 14," in note
