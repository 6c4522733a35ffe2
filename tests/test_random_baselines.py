"""The random baselines the benchmarks hold searches against: exact order statistics, percentiles, random cells
landed in a budget band."""
from __future__ import annotations

import importlib
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NB201_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"


@pytest.fixture(scope="module")
def bench_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_expected_best_of_matches_enumeration(bench_module):
    against = bench_module("against_random")
    population = np.array([90.0, 91.5, 91.5, 93.0, 85.0])
    for draws in (1, 2, 3):
        brute = np.mean([max(pick) for pick in itertools.product(population, repeat=draws)])
        assert against.expected_best_of(population, draws) == pytest.approx(brute, abs=1e-12)
    assert against.expected_best_of(population, 1) == pytest.approx(population.mean())


def test_share_beaten_counts_ties_half_and_skips_missing_rows():
    from dcanas.spaces.nb201.bench import share_beaten

    population = np.array([1.0, 2.0, 2.0, 3.0, np.nan])
    assert share_beaten(2.0, population) == pytest.approx(50.0)
    assert share_beaten(3.5, population) == pytest.approx(100.0)
    assert share_beaten(0.5, population) == pytest.approx(0.0)


def test_random_cell_lands_in_the_band_and_follows_its_seed():
    from dcanas.constraint import Budget
    from dcanas.errors import BudgetError
    from dcanas.landing import LANDING_BAND
    from dcanas.spaces.darts.candidates import random_in_band
    from dcanas.spaces.darts.cost import build_cost_table, network_cost
    from dcanas.spaces.darts.genotype import validate_genotype
    from dcanas.spaces.darts.network import EvalSetting

    setting = EvalSetting(style="cifar", cells=5, channels=16, num_classes=10, in_channels=1, image_size=14)
    table = build_cost_table(setting)
    budgets = [Budget("params", 150_000)]
    first, draws = random_in_band(table, budgets, seed=3, floor=LANDING_BAND)
    validate_genotype(first)
    assert draws >= 1
    assert LANDING_BAND * 150_000 <= network_cost(first, setting).params <= 150_000  # the network agrees
    assert random_in_band(table, budgets, seed=3, floor=LANDING_BAND) == (first, draws)
    others = {str(random_in_band(table, budgets, seed=s, floor=LANDING_BAND)[0]) for s in range(4, 8)}
    assert len(others) > 1  # the seed draws the cell
    both = budgets + [Budget("flops", 1.1 * network_cost(first, setting).flops)]
    cell, _ = random_in_band(table, both, seed=0, floor=LANDING_BAND)
    cost = network_cost(cell, setting)
    assert LANDING_BAND * 150_000 <= cost.params <= 150_000 and cost.flops <= both[1].limit
    with pytest.raises(BudgetError, match="networks span"):  # below the smallest network: refused before drawing
        random_in_band(table, [Budget("params", 1_000)], seed=0, floor=LANDING_BAND)
    with_memory = build_cost_table(setting, memory_dtype="float32")  # peak memory is a maximum: no floor
    roomy = [Budget("memory", 10 * with_memory.bounds("memory")[1])]
    assert random_in_band(with_memory, roomy, seed=0, floor=LANDING_BAND)[1] == 1
    low, high = table.bounds("params")
    with pytest.raises(BudgetError, match="no random cell"):  # reachable, but not by these few draws
        random_in_band(table, [Budget("params", low * 1.01)], seed=0, floor=LANDING_BAND, max_draws=3)


def test_random_cell_command(capsys):
    from dcanas.cli import main
    from dcanas.spaces.darts.cost import network_cost
    from dcanas.spaces.darts.genotype import load_genotype
    from dcanas.spaces.darts.network import EvalSetting

    argv = ["random-cell", "--max-params", "150K", "--cells", "5", "--channels", "16", "--image-size", "14",
            "--in-channels", "1", "--seed", "3", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    setting = EvalSetting(**out["setting"])
    assert network_cost(load_genotype(out["genotype"]), setting).params == out["params"]
    assert 0.85 <= out["budget_use"]["params"] <= 1.0 and out["seed"] == 3
    assert main(argv) == 0 and json.loads(capsys.readouterr().out) == out  # the seed alone draws it
    for bad, needle in ((["random-cell"], "give a budget"), (["random-cell", "--max-params", "1K"], "networks span"),
                        (["random-cell", "--max-params", "-5"], "positive")):
        try:
            code = main(bad)
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


@pytest.mark.skipif(not NB201_TABLE.is_file(), reason="needs ../shared/data/nb201")
def test_against_random_on_the_table(bench_module, tmp_path):
    against = bench_module("against_random")
    everything = against.band_accuracies(None, str(NB201_TABLE))
    assert len(everything) == 4 ** 6  # the none-free cells
    budget = {"metric": "params", "device": None, "limit": 700_000}
    band = against.band_accuracies(budget, str(NB201_TABLE))
    assert 0 < len(band) < len(everything)
    record = {"runs": [{"budget": budget, "seed": s, "test_acc_cifar10": float(band.max()),
                        "best_in_budget": float(band.max())} for s in range(3)]}
    path = tmp_path / "sq.json"
    path.write_text(json.dumps(record))
    done = subprocess.run([sys.executable, str(BENCHMARKS / "against_random.py"), str(path), "--table", str(NB201_TABLE)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| params"))
    ties = int(np.count_nonzero(band == band.max()))
    beaten = 100 * (len(band) - 0.5 * ties) / len(band)  # the band's best beats all the rest; its own ties count half
    assert f"| 3 | {band.max():.2f} ± 0.00 |" in row and f"| {beaten:.1f} ± 0.0 % |" in row


def test_against_random_bad_path_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "against_random.py"), str(tmp_path / "missing.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not found" in done.stderr
