"""The NAS-Bench-201 space: exact benchmark counts, arch strings and indices, supernet, cost and latency tables."""
import io
import json
import pickle
import random
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcanas.cli import main
from dcanas.spaces.nb201.bench import (BenchTableError, NB201Table, default_table_path, design_matrix, fit_latency_model,
                                latency_cost_table, latency_fit_table, load_nb201_table, read_hw_nas_bench_pickle)
from dcanas.spaces.nb201.arch import (EDGES, NUM_ARCHS, SENTINELS, Arch, ArchError, arch_from_enumeration,
                                      arch_to_index, enumeration_index, format_arch, index_to_arch, iter_archs,
                                      parse_arch, random_arch, resolve_arch)
from dcanas.spaces.nb201.cost import build_nb201_cost_table, count_bias_flops, nb201_cost
from dcanas.spaces.nb201.network import NB201Network, nb201_setting_for
from dcanas.spaces.nb201.ops import NONE_INDEX, PRIMITIVES
from dcanas.spaces.nb201.supernet import NB201SearchCell, NB201Supernet, NB201SupernetConfig, derive_arch

TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"
needs_table = pytest.mark.skipif(not TABLE.is_file(), reason=f"{TABLE} is absent (shared NAS-Bench-201 data)")



def uniform(op: str) -> str:
    return format_arch(Arch((op,) * 6))


ALL_CONV3 = uniform("nor_conv_3x3")
ALL_SKIP = uniform("skip_connect")

# NAS-Bench-201's own params (M) and FLOPs (M, its counter: conv/linear MACs + bias adds). The
# CIFAR-10 pair is quoted in the issue; all six are the min/max over the 15,625 archs the benchmark
# reports per dataset (min = every arch without convs, max = all nor_conv_3x3).
PUBLISHED = [
    ("cifar10", ALL_CONV3, 1.531546, 220.11969), ("cifar10", ALL_SKIP, 0.073306, 7.78305),
    ("cifar100", ALL_CONV3, 1.537396, 220.12554), ("cifar100", ALL_SKIP, 0.079156, 7.7889),
    ("imagenet16-120", ALL_CONV3, 1.538696, 55.03756), ("imagenet16-120", ALL_SKIP, 0.080456, 1.9534),
]


# -- exact counts -----------------------------------------------------------------------------

@pytest.mark.parametrize("dataset, arch, params_m, flops_m", PUBLISHED)
def test_published_nb201_counts(dataset, arch, params_m, flops_m):
    cost = nb201_cost(arch, nb201_setting_for(dataset))
    assert cost.params == round(params_m * 1e6)
    assert cost.flops_nb201 == round(flops_m * 1e6)
    # the repository convention drops exactly the classifier's bias adds (nothing else has a bias)
    assert cost.flops_nb201 - cost.flops == nb201_setting_for(dataset).num_classes


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "imagenet16-120"])
def test_published_range_over_all_15625(dataset):
    # min/max over every arch (none edges and dead nodes included, as NB201 counts them)
    table = build_nb201_cost_table(nb201_setting_for(dataset), flops_convention="nb201")
    low = next(r for r in PUBLISHED if r[0] == dataset and r[1] == ALL_SKIP)
    high = next(r for r in PUBLISHED if r[0] == dataset and r[1] == ALL_CONV3)
    for metric, k in (("params", 2), ("flops", 3)):
        costs = table.all_arch_costs(metric)
        assert costs.min() == round(low[k] * 1e6) and costs.max() == round(high[k] * 1e6)
        assert table.bounds(metric, allow_none=True) == (costs.min(), costs.max())


def test_zero_ops_and_dead_nodes_are_counted_like_nb201():
    # `none` and pools have no weights and no MACs; disconnected cells still run (and count) their convs
    base = nb201_cost(ALL_SKIP)
    for op in ("none", "avg_pool_3x3"):
        assert nb201_cost(uniform(op)) == base
    dead = parse_arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
    assert not dead.is_connected()
    assert nb201_cost(dead).params == base.params + 3 * 5 * sum(9 * c * c + 2 * c for c in (16, 32, 64))


def hand_params(arch: Arch, classes: int = 10) -> int:
    """Params from first principles: fixed parts plus 5 cells per stage of the arch's convs (conv + BN)."""
    stem = 3 * 16 * 9 + 2 * 16
    blocks = sum(ci * co * 9 + 2 * co + co * co * 9 + 2 * co + ci * co for ci, co in ((16, 32), (32, 64)))
    head = 2 * 64 + 64 * classes + classes
    per_op = {"nor_conv_3x3": lambda c: 9 * c * c + 2 * c, "nor_conv_1x1": lambda c: c * c + 2 * c}
    cells = sum(5 * per_op[op](c) for op in arch.ops if op in per_op for c in (16, 32, 64))
    return stem + blocks + head + cells


def hand_macs(arch: Arch) -> int:
    """Conv/linear MACs from first principles at 32x32 (stage sides 32, 16, 8)."""
    stem = 32 * 32 * 16 * 27
    blocks = sum(s * s * (ci * co * 9 + co * co * 9 + ci * co) for ci, co, s in ((16, 32, 16), (32, 64, 8)))
    per_op = {"nor_conv_3x3": 9, "nor_conv_1x1": 1}
    cells = sum(5 * per_op[op] * c * c * s * s for op in arch.ops if op in per_op
                for c, s in ((16, 32), (32, 16), (64, 8)))
    return stem + blocks + 64 * 10 + cells


@pytest.mark.parametrize("spec", [0, 1, 9, "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|nor_conv_3x3~0|none~1|none~2|"])
def test_mixed_archs_match_first_principles(spec):
    arch = resolve_arch(spec)
    cost = nb201_cost(arch)
    assert cost.params == hand_params(arch)
    assert cost.flops == hand_macs(arch)


def test_cost_table_sums_exactly_to_whole_networks():
    rng = random.Random(0)
    archs = [random_arch(rng) for _ in range(10)] + [resolve_arch(0), Arch(("none",) * 6)]
    for dataset, convention in (("cifar10", "macs"), ("cifar10", "nb201"), ("cifar100", "nb201"),
                                ("imagenet16-120", "macs")):
        setting = nb201_setting_for(dataset)
        table = build_nb201_cost_table(setting, convention)
        for arch in (archs if dataset == "cifar10" else archs[:3]):
            cost = nb201_cost(arch, setting)
            assert table.arch_cost(arch) == {"params": cost.params, "flops": cost.flops_in(convention)}
    assert table.entries["params"].shape == (15, 6, 5)


def test_other_widths_and_depths_still_sum_exactly():
    setting = nb201_setting_for("cifar10", channels=8, cells_per_stage=2)
    table = build_nb201_cost_table(setting)
    for arch in (resolve_arch(1), random_arch(random.Random(3))):
        cost = nb201_cost(arch, setting)
        assert table.arch_cost(arch) == {"params": cost.params, "flops": cost.flops}


def test_bias_flops_count_every_biased_output():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=True)
    assert count_bias_flops(conv, (1, 3, 5, 5)) == 8 * 25
    assert count_bias_flops(torch.nn.Conv2d(3, 8, 3, bias=False), (1, 3, 5, 5)) == 0
    assert count_bias_flops(torch.nn.Linear(4, 7), (1, 4)) == 7


def test_network_runs_every_dataset_shape():
    for dataset, classes in (("cifar10", 10), ("cifar100", 100), ("imagenet16-120", 120)):
        s = nb201_setting_for(dataset)
        net = NB201Network(1, s).eval()
        assert net(torch.randn(2, *s.input_shape()[1:])).shape == (2, classes)


# -- arch strings and indices -----------------------------------------------------------------

def test_parse_format_round_trip():
    rng = random.Random(1)
    for _ in range(300):
        arch = random_arch(rng)
        text = format_arch(arch)
        assert parse_arch(text) == arch and str(arch) == text
        assert arch_from_enumeration(enumeration_index(arch)) == arch
    assert parse_arch("  " + ALL_CONV3 + "\n") == Arch(("nor_conv_3x3",) * 6)
    # inputs listed out of order still name the same edges
    assert parse_arch("|none~0|+|skip_connect~1|nor_conv_1x1~0|+|none~0|none~1|none~2|").ops[1:3] == (
        "nor_conv_1x1", "skip_connect")


@pytest.mark.parametrize("text, fault", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "2 node group(s)"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_5x5'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 has 1 input(s)"),
    ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "input 2 is out of range"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "lists input 0 twice"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "not of the form op~input"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
    ("", "1 node group(s)"),
])
def test_malformed_strings_are_rejected_with_the_fault(text, fault):
    with pytest.raises(ArchError, match="invalid NAS-Bench-201 architecture") as info:
        parse_arch(text)
    assert fault in str(info.value)


def test_bad_indices_and_ops_are_rejected():
    for bad in (-1, NUM_ARCHS, True):
        with pytest.raises(ArchError, match="out of range"):
            index_to_arch(bad)
    with pytest.raises(ArchError, match="unknown op"):
        Arch(("none",) * 5 + ("sep_conv_3x3",))
    with pytest.raises(ArchError, match="6 edges"):
        Arch(("none",) * 5)


def test_index_order_reproduces_the_benchmark_generator():
    for index, text in SENTINELS.items():
        assert format_arch(index_to_arch(index)) == text and arch_to_index(text) == index
    seen = {arch_to_index(a) for a in iter_archs()}
    assert seen == set(range(NUM_ARCHS))
    assert resolve_arch("1") == resolve_arch(1) == parse_arch(SENTINELS[1])
    # the enumeration order itself: ops per edge in PRIMITIVES order, last edge fastest
    assert arch_from_enumeration(0) == Arch(("none",) * 6)
    assert arch_from_enumeration(1).ops[-1] == PRIMITIVES[1]
    assert arch_from_enumeration(NUM_ARCHS - 1) == Arch((PRIMITIVES[-1],) * 6)


@needs_table
def test_all_15625_indices_match_the_table():
    table = load_nb201_table(TABLE)
    assert len(table) == NUM_ARCHS
    assert table.indices.tolist() == list(range(NUM_ARCHS))
    assert table.archs == [format_arch(a) for a in iter_archs()]


# -- supernet ---------------------------------------------------------------------------------

SMALL = {"channels": 8, "cells_per_stage": 2}


def test_baseline_supernet_is_nb201_darts():
    model = NB201Supernet(NB201SupernetConfig(bottleneck=1, weight_sharing=False, derived_cells=False))
    # fixed parts (stem, ResNet blocks, last BN, classifier) + a non-affine conv1x1 and conv3x3 on
    # every edge of every cell: 10 C^2 weights per edge
    fixed = nb201_cost(ALL_SKIP).params
    assert sum(p.numel() for p in model.weight_parameters()) == fixed + 6 * 5 * sum(10 * c * c for c in (16, 32, 64))
    assert [tuple(a.shape) for a in model.arch_parameters()] == [(6, 5)]
    assert len(model.mixed_cells) == 15
    ids = {id(p) for p in model.weight_parameters()}
    assert id(model.alpha) not in ids and len(ids) + 1 == len(list(model.parameters()))


@pytest.mark.parametrize("bottleneck, sharing, derived", [(1, False, False), (1, True, False), (2, False, True),
                                                          (2, True, True), (4, True, False)])
def test_every_saving_combination_trains(bottleneck, sharing, derived):
    torch.manual_seed(0)
    model = NB201Supernet(NB201SupernetConfig(bottleneck=bottleneck, weight_sharing=sharing,
                                              derived_cells=derived, **SMALL))
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    F.cross_entropy(model(x), y).backward()
    assert model.alpha.grad is not None and model.alpha.grad.abs().sum() > 0
    assert len(model.mixed_cells) == (3 if derived else 6)
    assert all(p.grad is not None for n, p in model.named_parameters() if "stem" in n)


def test_weight_sharing_runs_each_op_once_per_source():
    calls = {"shared": 0, "plain": 0}
    for sharing, key in ((True, "shared"), (False, "plain")):
        cell = NB201SearchCell(8, 1, sharing)
        convs = [m for m in cell.modules() if isinstance(m, torch.nn.Conv2d)]
        for m in convs:
            m.register_forward_hook(lambda *a, k=key: calls.__setitem__(k, calls[k] + 1))
        cell(torch.randn(2, 8, 6, 6), weights=F.softmax(torch.zeros(6, 5), -1))
    assert calls == {"shared": 3 * 2, "plain": 6 * 2}  # conv1x1 + conv3x3 per source / per edge


@pytest.mark.parametrize("sharing", [False, True])
def test_a_one_hot_mixture_equals_the_discrete_cell(sharing):
    torch.manual_seed(0)
    cell = NB201SearchCell(8, 1, sharing).eval()
    arch = random_arch(random.Random(5), allow_none=False)
    weights = F.one_hot(torch.tensor(arch.op_indices), len(PRIMITIVES)).float()
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(cell(x, weights=weights), cell(x, arch=arch))


def test_derive_with_and_without_none():
    alpha = torch.zeros(6, 5)
    alpha[:, NONE_INDEX] = 5.0
    alpha[:, PRIMITIVES.index("nor_conv_1x1")] = 1.0
    alpha[2, PRIMITIVES.index("avg_pool_3x3")] = 2.0
    assert derive_arch(alpha, allow_none=True) == Arch(("none",) * 6)
    got = derive_arch(alpha)
    assert got.ops[2] == "avg_pool_3x3" and got.ops.count("nor_conv_1x1") == 5
    model = NB201Supernet(NB201SupernetConfig(**SMALL))
    with torch.no_grad():
        model.alpha.copy_(alpha)
    assert model.update_derived() == got == model.arch and not got.has_none()
    assert NB201Supernet(NB201SupernetConfig(derive_none=True, **SMALL)).derive(allow_none=True) is not None


# -- cost tables for search -------------------------------------------------------------------

def test_expected_cost_is_the_softmax_weighted_table():
    table = build_nb201_cost_table()
    alpha = torch.randn(6, 5, requires_grad=True)
    k = table.expected_cost(alpha, "params")
    manual = table.fixed["params"] + (F.softmax(alpha, -1).detach().numpy() * table.per_edge("params")).sum()
    assert k.item() == pytest.approx(manual, rel=1e-6)
    k.backward()
    assert alpha.grad.abs().sum() > 0
    # a near one-hot alpha costs what its derived arch costs; exclude_none gives `none` no weight
    arch = random_arch(random.Random(2), allow_none=False)
    sharp = 50.0 * F.one_hot(torch.tensor(arch.op_indices), 5).float()
    assert table.expected_cost(sharp, "flops").item() == pytest.approx(table.arch_cost(arch)["flops"], rel=1e-5)
    blunt = torch.zeros(6, 5)
    no_none = table.expected_cost(blunt, "params", exclude_none=True).item()
    assert no_none == pytest.approx(table.fixed["params"] + table.per_edge("params")[:, 1:].mean(1).sum(), rel=1e-6)
    assert [c.shape for c in table.alpha_costs("params")] == [(6, 5)]


def test_bounds_are_attained_and_match_brute_force():
    table = build_nb201_cost_table()
    ops = np.array([a.op_indices for a in iter_archs()])
    no_none = (ops != NONE_INDEX).all(axis=1)
    for metric in ("params", "flops"):
        every = table.all_arch_costs(metric, ops)
        assert table.bounds(metric) == (every[no_none].min(), every[no_none].max())
        low, high = table.bounds(metric)
        assert table.arch_cost(table.extreme_arch(metric))[metric] == low
        assert table.arch_cost(table.extreme_arch(metric, cheapest=False))[metric] == high


# -- latency: readers, the additive model, its cost table ---------------------------------------

def synthetic_table(noise: float = 0.0, seed: int = 0) -> tuple[NB201Table, np.ndarray, float]:
    """A full-size table whose 'dev' latencies are exactly additive (plus optional noise)."""
    rng = np.random.default_rng(seed)
    coef = np.abs(rng.normal(1.0, 0.5, (6, 5)))
    coef[:, NONE_INDEX] = 0.0
    archs = list(iter_archs())
    ops = np.array([a.op_indices for a in archs])
    y = 2.0 + coef[np.arange(6)[None, :], ops].sum(axis=1) + noise * rng.normal(size=len(ops))
    table = NB201Table(np.arange(NUM_ARCHS), [format_arch(a) for a in archs], {}, {"dev": y}, source="synthetic")
    return table, coef, 2.0


def test_latency_model_recovers_an_additive_device():
    table, coef, intercept = synthetic_table()
    model = fit_latency_model(table, "dev")
    np.testing.assert_allclose(model.coef, coef, atol=1e-9)
    assert model.intercept == pytest.approx(intercept) and model.r2 == pytest.approx(1.0)
    assert model.mean_rel_error < 1e-9 and model.n == NUM_ARCHS
    assert design_matrix(table.op_indices()[:3]).shape == (3, 25)
    noisy = fit_latency_model(synthetic_table(noise=0.5)[0], "dev")
    assert 0.5 < noisy.r2 < 0.99
    with pytest.raises(BenchTableError, match="no latencies for device 'pixel9'"):
        fit_latency_model(table, "pixel9")


def test_latency_cost_table_is_intercept_plus_coefficients():
    table, _, _ = synthetic_table(noise=0.3, seed=1)
    model = fit_latency_model(table, "dev")
    cost = latency_cost_table("dev", table)
    assert cost.fixed["latency"] == model.intercept
    rng = random.Random(4)
    for _ in range(20):
        arch = random_arch(rng)
        expected = model.intercept + sum(model.coef[e, o] for e, o in enumerate(arch.op_indices))
        assert cost.arch_cost(arch)["latency"] == pytest.approx(expected, rel=1e-12)
        assert model.predict(arch) == pytest.approx(expected, rel=1e-12)
    # the budget range a search can reach, by brute force over all archs
    ops = table.op_indices()
    pred = model.predict_many(ops)
    no_none = (ops != NONE_INDEX).all(axis=1)
    assert cost.bounds("latency") == pytest.approx((pred[no_none].min(), pred[no_none].max()), rel=1e-12)
    assert cost.bounds("latency", allow_none=True) == pytest.approx((pred.min(), pred.max()), rel=1e-12)
    assert cost.arch_cost(cost.extreme_arch("latency"))["latency"] == pytest.approx(cost.bounds("latency")[0])
    assert "dev" in cost.notes["latency"]
    with pytest.raises(Exception, match="measured on the benchmark's CIFAR-10 network"):
        latency_cost_table("dev", table, setting=nb201_setting_for("imagenet16-120"))


# Measured on the shared table (all 15,625 archs): R² pixel3 0.8943, raspi4 0.9048; over the 4,096
# none-free archs (what derive() returns by default): 0.9494 and 0.9743. Floors sit a little below.
FIT_FLOORS = {"pixel3": 0.88, "raspi4": 0.89, "eyeriss": 0.9999, "fpga": 0.9999}
FIT_FLOORS_NO_NONE = {"pixel3": 0.94, "raspi4": 0.96}


@needs_table
def test_measured_latency_fits_clear_their_floors():
    table = load_nb201_table(TABLE)
    models = {m.device: m for m in latency_fit_table(table)}
    assert len(models) == 27
    for device, floor in FIT_FLOORS.items():
        assert models[device].r2 >= floor, (device, models[device].r2)
    for m in latency_fit_table(table, list(FIT_FLOORS_NO_NONE), exclude_none=True):
        assert m.r2 >= FIT_FLOORS_NO_NONE[m.device] and m.n == 4096
    # the table's measurements, for the record: HW-NAS-Bench's pixel3 figure for index 0
    assert table.latency_of(0, "pixel3") == pytest.approx(3.60585)
    cost = latency_cost_table("pixel3", table)
    low, high = cost.bounds("latency")
    assert 0 < low < high and cost.notes["latency"].startswith("pixel3")


def test_hw_nas_bench_pickle_reader(tmp_path):
    rng = np.random.default_rng(0)
    pix = rng.uniform(1, 30, NUM_ARCHS)
    data = {"nasbench201": {
        "cifar10": {"pixel3_latency": pix.tolist(), "raspi4_latency": rng.uniform(3, 90, NUM_ARCHS),
                    "edgegpu_energy": [1.0] * NUM_ARCHS},
        "ImageNet": {"pixel3_latency": [2.0] * NUM_ARCHS}},
        "fbnet": {}}
    path = tmp_path / "HW-NAS-Bench-v1_0.pickle"
    path.write_bytes(pickle.dumps(data))
    table = read_hw_nas_bench_pickle(path)
    assert table.devices == ["pixel3", "raspi4"]
    assert table.latency_of(7, "pixel3") == pix[7]
    assert table.latency_of(SENTINELS[1], "pixel3") == pix[1]
    assert read_hw_nas_bench_pickle(path, "imagenet16-120").latency_of(3, "pixel3") == 2.0
    assert fit_latency_model(table, "raspi4").n == NUM_ARCHS
    # the inner per-dataset dict alone is accepted too
    inner = tmp_path / "inner.pkl"
    inner.write_bytes(pickle.dumps(data["nasbench201"]))
    assert read_hw_nas_bench_pickle(inner).devices == ["pixel3", "raspi4"]
    with pytest.raises(BenchTableError, match="no dataset 'cifar100'"):
        read_hw_nas_bench_pickle(path, "cifar100")
    short = tmp_path / "short.pickle"
    short.write_bytes(pickle.dumps({"cifar10": {"pixel3_latency": [1.0] * 10}}))
    with pytest.raises(BenchTableError, match="has 10 values, expected 15625"):
        read_hw_nas_bench_pickle(short)
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"cifar10": {"pixel3_latency": Path("x")}}))
    with pytest.raises(BenchTableError, match="holds only dicts, lists and numbers"):
        read_hw_nas_bench_pickle(evil)


# -- the CSV reader and the CLI ---------------------------------------------------------------

def write_small_csv(path: Path, indices=(0, 1, 9)) -> None:
    header = ("index,arch_str,test_acc_cifar10,test_acc_cifar100,test_acc_imagenet16_120,"
              "latency_ms_pixel3,latency_ms_raspi4")
    lines = [header]
    for i in indices:
        lines.append(f"{i},{SENTINELS[i]},{90 + i},{60 + i},{30 + i},{1.5 + i},{4.5 + i}")
    path.write_text("\n".join(lines) + "\n")


def test_csv_reader_and_lookup(tmp_path):
    path = tmp_path / "t.csv"
    write_small_csv(path)
    table = load_nb201_table(path)
    assert table.devices == ["pixel3", "raspi4"] and len(table) == 3
    row = table.lookup(SENTINELS[9], ["raspi4"])
    assert row == {"index": 9, "arch": SENTINELS[9],
                   "test_accuracy": {"cifar10": 99.0, "cifar100": 69.0, "imagenet16-120": 39.0},
                   "latency_ms": {"raspi4": 13.5}}
    assert table.lookup(1)["latency_ms"]["pixel3"] == 2.5
    with pytest.raises(BenchTableError, match="index 5 is not in"):
        table.lookup(5)
    bad = tmp_path / "bad.csv"
    bad.write_text(path.read_text().replace("|avg_pool_3x3~0|+", "|avg_pool_3x3~0|+|x~0|+", 1))
    with pytest.raises(BenchTableError, match="line 2: invalid NAS-Bench-201 architecture"):
        load_nb201_table(bad)
    bad.write_text(path.read_text().replace("91", "ninety-one"))
    with pytest.raises(BenchTableError, match="line 3 has a non-numeric value"):
        load_nb201_table(bad)


def test_missing_table_names_the_path_and_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv("DCANAS_NB201_TABLE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_table_path() == tmp_path / ".." / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["nb201", "lookup", "1"]) == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "--table" in lines[0] and "nb201_cifar10_hw.csv" in lines[0]
    monkeypatch.setenv("DCANAS_NB201_TABLE", str(tmp_path / "nope.csv"))
    with pytest.raises(BenchTableError, match=r"nope.csv \(from \$DCANAS_NB201_TABLE\)"):
        load_nb201_table()


def run_cli(*argv: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(list(argv)) == 0
    return json.loads(out.getvalue())


def test_cli_lookup_and_count(tmp_path):
    path = tmp_path / "t.csv"
    write_small_csv(path)
    got = run_cli("nb201", "lookup", "1", "--table", str(path), "--device", "pixel3", "--json")
    assert got["arch"] == SENTINELS[1] and got["latency_ms"] == {"pixel3": 2.5}
    assert got["params_flops"]["cifar10"]["params"] == nb201_cost(1).params
    assert got["params_flops"]["cifar10"]["flops_nb201"] == nb201_cost(1).flops_nb201
    assert "NAS-Bench-201" in got["flops_convention"] and got["test_accuracy"]["cifar100"] == 61.0
    by_string = run_cli("nb201", "--json", "lookup", SENTINELS[9], "--table", str(path))
    assert by_string["index"] == 9 and set(by_string["latency_ms"]) == {"pixel3", "raspi4"}
    counted = run_cli("nb201", "count", ALL_CONV3, "--dataset", "cifar100", "--json")
    assert (counted["params"], counted["flops_nb201"]) == (1_537_396, 220_125_540)
    assert counted["flops_convention"] != counted["flops_nb201_convention"]


@needs_table
def test_cli_latency_fit_on_the_shared_table():
    got = run_cli("nb201", "latency-fit", "--table", str(TABLE), "--json")
    assert len(got["models"]) == 27 and "coef_ms" not in got["models"][0]
    one = run_cli("nb201", "latency-fit", "--table", str(TABLE), "--device", "pixel3", "--json")
    assert one["models"][0]["device"] == "pixel3" and set(one["models"][0]["coef_ms"]) == {
        f"{j}<-{i}" for i, j in EDGES}
