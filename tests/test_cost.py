"""Exact counts against published figures, and exact agreement of per-op tables with whole networks."""
import json
import random

import pytest
import torch

from dcanas.cost import count_flops, count_params

from dcanas.spaces.darts.cost import build_cost_table, network_cost, op_cost
from dcanas.spaces.darts.genotype import GENOTYPES, random_genotype
from dcanas.spaces.darts.network import EvalNetwork, EvalSetting, eval_setting_for
from dcanas.spaces.darts.ops import PRIMITIVES

# Parameter counts (auxiliary head excluded, as DARTS' count_parameters_in_MB does). DARTS_V2 on
# CIFAR-10 is logged by the original code as "param size = 3.349342MB"; the others are published
# rounded: DARTS 3.3M (CIFAR) / 4.7M (ImageNet), PC-DARTS 3.6M (CIFAR) / 5.3M (ImageNet).
PUBLISHED = [
    ("DARTS_V2", "cifar10", 3_349_342, 3.3),
    ("PC_DARTS", "cifar10", 3_634_678, 3.6),
    ("DARTS_V1", "cifar10", 3_169_414, 3.2),
    ("DARTS_V2", "cifar100", 3_401_272, 3.4),
    ("PC_DARTS", "cifar100", 3_686_608, 3.7),
    ("DARTS_V1", "cifar100", 3_221_344, 3.2),
    ("DARTS_V2", "imagenet", 4_718_752, 4.7),
    ("PC_DARTS_IMAGENET", "imagenet", 5_342_464, 5.3),
    ("DARTS_V1", "imagenet", 4_510_432, 4.5),
]


@pytest.mark.parametrize("name, dataset, exact, rounded", PUBLISHED)
def test_published_param_counts(name, dataset, exact, rounded):
    cost = network_cost(GENOTYPES.get(name), eval_setting_for(dataset))
    assert cost.params == exact
    assert round(cost.params / 1e6, 1) == rounded
    assert cost.params_with_aux > cost.params


def test_darts_v2_cifar_flops_and_aux():
    cost = network_cost(GENOTYPES.get("DARTS_V2"), eval_setting_for("cifar10"))
    # 528M MACs is the figure later papers list for DARTS (2nd order) on CIFAR-10.
    assert round(cost.flops / 1e6) == 528
    # the CIFAR auxiliary head: conv 1x1 C->128, BN, conv 2x2 128->768, BN, linear 768->10
    c_aux = 4 * 36 * 4  # concat of 4 nodes at 4x channels after two reductions
    assert cost.params_with_aux - cost.params == c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10


def test_flops_are_macs_of_conv_and_linear():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=True)
    assert count_flops(conv, (1, 3, 10, 10)) == 10 * 10 * 8 * 3 * 9
    lin = torch.nn.Linear(20, 5)
    assert count_flops(lin, (1, 20)) == 100
    dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_flops(dw, (1, 8, 6, 6)) == 6 * 6 * 8 * 9
    pool = torch.nn.Sequential(torch.nn.MaxPool2d(3, 1, 1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    assert count_flops(pool, (1, 8, 6, 6)) == 0


def test_op_cost_matches_hand_counts():
    # sep_conv_3x3 at C=16, stride 1: two (dw 3x3 + pw 1x1 + BN) blocks
    params, flops = op_cost("sep_conv_3x3", 16, 1, 8)
    assert params == 2 * (16 * 9 + 16 * 16 + 2 * 16)
    assert flops == 2 * 64 * (16 * 9 + 16 * 16)
    assert op_cost("max_pool_3x3", 16, 1, 8) == (0, 0)
    assert op_cost("none", 16, 2, 8) == (0, 0)
    # skip_connect at stride 2 is FactorizedReduce: two 1x1 convs C -> C/2 and a BN
    assert op_cost("skip_connect", 16, 2, 8) == (2 * 16 * 8 + 2 * 16, 2 * 16 * 16 * 8)


SETTINGS = [
    eval_setting_for("cifar10"),
    eval_setting_for("imagenet", num_classes=200, image_size=64, cells=8),
    eval_setting_for("fashion-mnist", cells=5, channels=8),  # 28 -> 14 -> 7: odd resolutions
    eval_setting_for("digits"),
    EvalSetting("cifar", cells=3, channels=6, num_classes=3, in_channels=2, image_size=9),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s.style}-{s.cells}x{s.channels}-{s.image_size}")
def test_table_sum_equals_whole_network_exactly(setting):
    table = build_cost_table(setting)
    rng = random.Random(setting.cells * 100 + setting.channels)
    genotypes = [random_genotype(rng) for _ in range(12)] + [GENOTYPES.get("DARTS_V2"), GENOTYPES.get("PC_DARTS")]
    for g in genotypes:
        whole = network_cost(g, setting)
        from_table = table.genotype_cost(g)
        assert from_table["params"] == whole.params
        assert from_table["flops"] == whole.flops


def test_bounds_are_attained_and_bracket_published():
    setting = eval_setting_for("cifar10")
    table = build_cost_table(setting)
    low, high = table.bounds("params")
    assert 1_360_000 < low < 1_380_000  # all parameter-free ops: about 1.37M
    for name in ("DARTS_V1", "DARTS_V2", "PC_DARTS"):
        assert low <= network_cost(GENOTYPES.get(name), setting).params <= high
    rng = random.Random(0)
    for _ in range(30):
        p = table.genotype_cost(random_genotype(rng))["params"]
        assert low <= p <= high


def test_networks_run_at_any_input():
    for setting in SETTINGS[1:]:
        net = EvalNetwork(GENOTYPES.get("DARTS_V2"), setting)
        net.train()
        net.drop_path_prob = 0.2
        x = torch.randn(2, setting.in_channels, setting.image_size, setting.image_size)
        logits, aux = net.forward_with_aux(x)
        assert logits.shape == (2, setting.num_classes) and aux.shape == (2, setting.num_classes)
        net.eval()
        assert net(x).shape == (2, setting.num_classes)
        assert count_params(net) < count_params(net, include_aux=True)


def test_peak_activation_memory_matches_what_the_graph_allocates():
    """The execution-order count equals the bytes PyTorch really holds when the traced graph runs (values
    dropped after last use), on the published network and random genotypes; eager Python holds more."""
    import random

    from dcanas.memory import measured_peak_bytes, model_bytes, peak_activation_bytes
    from dcanas.spaces.darts.latency import random_genotype

    rng = random.Random(1)
    setting = eval_setting_for("fashion-mnist", cells=5, channels=8)
    for genotype in [GENOTYPES.get("DARTS_V2")] + [random_genotype(rng, 4) for _ in range(3)]:
        net = EvalNetwork(genotype, setting)
        predicted = peak_activation_bytes(net)
        assert predicted == measured_peak_bytes(net) < measured_peak_bytes(net, graph_order=False)
        assert peak_activation_bytes(net, dtype="int8") * 4 == predicted
        # the input image alone is a floor; every cell output at once would be far more
        assert predicted > 1 * 28 * 28 * 4
    net = EvalNetwork(GENOTYPES.get("DARTS_V2"), eval_setting_for("cifar10"))
    assert model_bytes(net) == 4 * 3_349_342 and model_bytes(net, "int8") == 3_349_342


@pytest.mark.parametrize("dataset, overrides", [
    ("digits", {}), ("fashion-mnist", {"cells": 7, "channels": 10, "image_size": 27}),
    ("imagenet", {"cells": 5, "channels": 8, "image_size": 56}), ("imagenet", {"cells": 4, "channels": 6, "image_size": 37})])
def test_composed_peak_equals_the_traced_network(dataset, overrides):
    """The per-op composition the search uses (spaces/darts/peak.py) gives exactly the whole-network fx count,
    in both stem styles and at odd resolutions; the cost table reports it at the deployed dtype."""
    from dcanas.memory import peak_activation_bytes
    from dcanas.spaces.darts.peak import genotype_peak_elements

    rng = random.Random(3)
    setting = eval_setting_for(dataset, **overrides)
    table = build_cost_table(setting, memory_dtype="int8")
    for genotype in [GENOTYPES.get("DARTS_V2")] + [random_genotype(rng) for _ in range(4)]:
        traced = peak_activation_bytes(EvalNetwork(genotype, setting))
        assert genotype_peak_elements(genotype, setting) * 4 == traced
        assert table.genotype_cost(genotype)["memory"] == traced // 4


def test_peak_bounds_are_the_extremes_over_every_genotype():
    """The bounds (per-node choice given where the inputs are last used) equal a brute-force enumeration of every
    ordered edge pattern, and random genotypes with any ops stay inside them."""
    import itertools

    from dcanas.spaces.darts.peak import network_layout, peak_bounds, ranked_ops, segment_peak

    setting = eval_setting_for("digits", cells=3, channels=6)
    stem, segments, head = network_layout(setting)
    image = setting.image_size ** 2
    concat = (2, 3, 4, 5)
    orders = list(itertools.product(*[list(itertools.permutations(range(n), 2)) for n in range(2, 6)]))
    extremes = []
    for pick, end in ((min, 0), (max, -1)):
        value = max(stem, head)
        for reduction in (False, True):
            group = [s for s in segments if s.plan.reduction == reduction]
            ops = [ranked_ops(group[0].plan, i)[end] for i in range(5)]
            value = max(value, pick(max(segment_peak(tuple((ops[i], i) for pair in order for i in pair), concat, s)
                                        for s in group) for order in orders))
        extremes.append(image + value)
    low, high = peak_bounds(setting)
    assert (low, high) == tuple(extremes) and low < high
    rng = random.Random(0)
    table = build_cost_table(setting, memory_dtype="float32")
    assert table.bounds("memory") == (4 * low, 4 * high)
    for _ in range(200):
        assert 4 * low <= table.genotype_cost(random_genotype(rng))["memory"] <= 4 * high


def test_memory_constraint_is_exact_in_value_and_pushes_the_peak_cells_towards_lighter_ops():
    from dcanas.constraint import Budget, Constraint
    from dcanas.spaces.darts.peak import segment_peaks

    setting = eval_setting_for("digits")
    table = build_cost_table(setting, memory_dtype="float32")
    genotype = GENOTYPES.get("DARTS_V2")
    constraint = Constraint(table, [Budget("memory", table.bounds("memory")[0])])
    alphas = [torch.zeros(14, 8, requires_grad=True) for _ in range(2)]
    (cost,) = constraint.expected_costs(alphas, genotype)
    assert float(cost.detach()) == table.genotype_cost(genotype)["memory"]
    cost.backward()
    skip, sep = PRIMITIVES.index("skip_connect"), PRIMITIVES.index("sep_conv_3x3")
    kept = torch.as_tensor(table.kept_edges(genotype)[0].astype(bool))
    grad = alphas[0].grad[kept]
    # more weight on a convolution of a kept normal edge raises the estimate; a skip (a view) allocates nothing
    assert (grad[:, sep] > 0).all() and (grad[:, skip] < 0).all()
    assert (alphas[0].grad[~kept] == 0).all()
    # the smooth maximum: a cell type whose cells all sit far below the peak pulls on nothing
    original = table.entries["memory"].copy()
    peaks = segment_peaks(genotype, setting)
    low_cells = [k for k, p in enumerate(peaks) if p < 0.6 * max(peaks)]
    weights = table.peak_alpha_costs(genotype)
    assert low_cells and all((w >= 0).all() for w in weights)
    table.entries["memory"][low_cells] *= 1000  # make only the low cells' ops expensive: the pull stays the same
    again = table.peak_alpha_costs(genotype)
    assert all(abs(a - b).max() < 1e-3 * b.max() for a, b in zip(again, weights))
    table.entries["memory"] = original


def test_count_reports_memory_and_refuses_unknown_dtypes(capsys):
    from dcanas.cli import main

    assert main(["count", "DARTS_V2", "--dataset", "digits", "--json", "--dtype", "int8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dtype"] == "int8" and out["model_bytes"] == out["params"] and out["peak_memory_bytes"] > 0
    assert main(["count", "DARTS_V2", "--dtype", "int4"]) == 2
    assert "--dtype must be one of" in capsys.readouterr().err


def test_a_search_run_folder_is_counted_exported_and_profiled_as_it_was_searched(tmp_path, capsys):
    """count, export and profile of a search folder build the network the search budgeted, not CIFAR-10's."""
    import dcanas
    from dcanas.cli import main

    run = tmp_path / "search"
    assert main(["search", "--max-params", "100K", "--max-steps", "2", "--epochs", "1", "--quiet", "--threads", "1",
                 "--run-dir", str(run)]) == 0
    searched = json.loads((run / "result.json").read_text())
    capsys.readouterr()
    assert main(["count", str(run), "--json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["params"] == searched["params"] <= 100_000 and counted["setting"] == searched["setting"]
    assert dcanas.count(str(run)).params == searched["params"]
    assert dcanas.count(str(run), dataset="cifar10").params > 1_000_000  # naming another dataset still works
    assert main(["count", str(run), "--channels", "8", "--json"]) == 0  # a typed option overrides one field
    assert json.loads(capsys.readouterr().out)["setting"] == {**searched["setting"], "channels": 8}
    assert main(["export", str(run), "--onnx", str(tmp_path / "net.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["setting"] == searched["setting"]
    assert main(["profile", str(run), "--runs", "2", "--warmup", "1", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [1, 1, 8, 8]
