"""--derive-by perturbation: the op and the inputs whose removal costs the supernet most accuracy are kept."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dcanas.errors import ConfigError
from dcanas.search_config import SearchConfig
from dcanas.search_loop import run_search
from dcanas.selection import perturbation_scores
from dcanas.spaces import SPACES
from dcanas.spaces.darts.ops import PRIMITIVES
from dcanas.spaces.darts.supernet import derive_genotype

NONE = 0


class ToySupernet(nn.Module):
    """Two edges, three ops (0 = none). Only op 2 of edge 0 carries the label; the rest is noise."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(2, 3))
        self.norm = nn.BatchNorm1d(4)  # running statistics the scoring must leave as they were

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.softmax(self.alpha, dim=-1)
        label, noise = x[:, :4], x[:, 4:]
        outputs = [[torch.zeros_like(label), noise, 10 * label], [torch.zeros_like(label), noise, noise.flip(1)]]
        mixed = sum(w[e, o] * outputs[e][o] for e in range(2) for o in range(3))
        return self.norm(mixed)


def _toy_data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (n,), generator=g)
    return torch.cat([F.one_hot(labels, 4).float(), 0.05 * torch.randn(n, 4, generator=g)], dim=1), labels


def test_the_op_the_supernet_relies_on_has_the_largest_drop():
    model = ToySupernet()
    images, labels = _toy_data()
    model.alpha.data[0] = torch.tensor([0.0, 2.0, 0.0])  # the alphas prefer the noise op on edge 0
    alpha_before = model.alpha.detach().clone()
    running_before = model.norm.running_mean.clone()
    scores = perturbation_scores(model, images, labels, NONE, choose_edges=True)
    drops = scores.op_drops[0]
    assert scores.accuracy == 100.0  # op 2 still dominates with a tenth of the weight
    assert drops[0, 2] > 50  # without it, only noise is left
    assert abs(drops[0, 1]) < 1e-9 and drops[1, 1:].abs().max() < 1e-9  # nothing else matters
    assert torch.isnan(drops[:, NONE]).all()  # `none` is never derived, so never scored
    assert scores.edge_drops[0][0] > 50 and abs(scores.edge_drops[0][1]) < 1e-9
    # the scoring leaves the supernet as it found it
    assert torch.equal(model.alpha.detach(), alpha_before) and torch.equal(model.norm.running_mean, running_before)
    assert model.training
    # the alphas' choice on edge 0 is the noise op; the logits choose the label op, `none` ranked last everywhere
    logits = scores.logits()[0]
    assert int(model.alpha[0].argmax()) == 1 and int(logits[0].argmax()) == 2
    assert (logits[:, NONE] < logits[:, 1:].min(dim=1).values).all() and torch.isfinite(logits).all()


def test_without_edge_choice_no_edge_is_removed():
    scores = perturbation_scores(ToySupernet(), *_toy_data(), NONE, choose_edges=False)
    assert scores.edge_drops is None and "edge_drops" not in scores.to_dict(("alpha",))


def test_edge_strength_picks_each_nodes_inputs():
    """The given strengths, not the alphas, choose the two inputs of each node; the ops still come from the logits."""
    alphas = torch.zeros(14, len(PRIMITIVES))
    alphas[:, PRIMITIVES.index("sep_conv_3x3")] = 1.0
    strength = torch.arange(14, dtype=torch.float64)  # later edges stronger: each node keeps its two last inputs
    genotype = derive_genotype(alphas, alphas, edge_strength=(strength, -strength))
    assert [j for _, j in genotype.normal] == [0, 1, 1, 2, 2, 3, 3, 4]
    assert [j for _, j in genotype.reduce] == [0, 1, 0, 1, 0, 1, 0, 1]  # reversed: the first two inputs
    assert {op for op, _ in genotype.normal} == {"sep_conv_3x3"}
    assert derive_genotype(alphas, alphas) == derive_genotype(alphas, alphas, edge_strength=None)


FAST = dict(dataset="digits", epochs=1, batch_size=32, max_steps=3, channels=8, cells=3, derive_images=32,
            derive_by="perturbation")


def test_a_darts_search_derives_by_perturbation_within_budget(tmp_path):
    result = run_search(SearchConfig(**FAST, max_params=150_000), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    selection = saved["derivation"]
    assert selection["by"] == "perturbation" and selection["images"] == FAST["derive_images"]
    assert set(selection["edge_drops"]) == {"alpha_normal", "alpha_reduce"}
    assert all(b["ok"] for b in saved["budgets"].values())
    assert "Derived by perturbation" in (tmp_path / "run" / "report.md").read_text()
    # the raw genotype is exactly what the recorded drops derive
    space = SPACES.get("darts")
    drops = [torch.tensor([[float("nan") if v is None else v for v in row] for row in selection["op_drops"][n]],
                          dtype=torch.float64) for n in space.alpha_names]
    logits = [torch.where(torch.isnan(d), torch.full_like(d, -1e3), d).float() for d in drops]
    strength = [torch.tensor(selection["edge_drops"][n]) for n in space.alpha_names]
    config = SearchConfig(**FAST)
    assert space.to_text(space.derive(logits, config, strength)) == saved["raw_genotype"]
    assert result.genotype == space.derive(logits, config, strength) or result.repairs or result.fills


def test_perturbation_selection_is_deterministic(tmp_path):
    """Scored from fixed images after the last checkpoint, with the supernet left as it was: the same search
    selects the same (with the checkpoint's exact resume, a resumed search selects as an uninterrupted one)."""
    first, second = (run_search(SearchConfig(**FAST), tmp_path / d, progress=False) for d in ("a", "b"))
    assert first.derivation == second.derivation and first.genotype == second.genotype


def test_scoring_leaves_a_real_supernet_bit_for_bit_as_it_was():
    """What a resume relies on: the scores read the supernet and change nothing in it, not even BatchNorm's
    running statistics that batch-statistics forwards move."""
    from dcanas.search_loop import build_supernet

    torch.manual_seed(0)
    model = build_supernet(SearchConfig(dataset="digits", channels=8, cells=3), 1, 10)
    model.train()
    model(torch.randn(16, 1, 8, 8))  # running statistics away from their initial values
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    first = perturbation_scores(model, images, labels, PRIMITIVES.index("none"), choose_edges=True)
    after = model.state_dict()
    assert model.training and all(torch.equal(before[k], after[k]) for k in before)
    again = perturbation_scores(model, images, labels, PRIMITIVES.index("none"), choose_edges=True)
    assert all(torch.equal(a, b) for a, b in zip(first.op_drops[0].nan_to_num(-9), again.op_drops[0].nan_to_num(-9)))


def test_nb201_keeps_every_edge(tmp_path):
    config = SearchConfig(space="nb201", dataset="synthetic", epochs=1, batch_size=16, max_steps=2, channels=8,
                          cells=3, derive_by="perturbation", derive_images=32, rerank="none", threads=1)
    result = run_search(config, tmp_path / "run", progress=False)
    selection = json.loads((tmp_path / "run" / "result.json").read_text())["derivation"]
    assert "edge_drops" not in selection and len(selection["op_drops"]["alpha"]) == 6
    assert result.space.to_text(result.raw_genotype).count("~") == 6


@pytest.mark.parametrize("value", ["votes", "Perturbation"])
def test_unknown_derivation_is_refused(value):
    with pytest.raises(ConfigError, match="--derive-by must be one of alphas, perturbation"):
        SearchConfig(derive_by=value).validate()


@pytest.mark.parametrize("options", [dict(rerank="synflow"), dict(budget_scope="landing")])
def test_darts_landing_lists_cannot_take_the_edge_drops(options):
    """The darts landing's list picks each node's inputs by the op logits: it would drop the edge choice."""
    with pytest.raises(ConfigError, match="--derive-by perturbation chooses each node's inputs"):
        SearchConfig(derive_by="perturbation", max_params=150_000, **options).validate()
    SearchConfig(space="nb201", derive_by="perturbation", **options).validate()  # nb201 keeps every edge


def test_dcanas_land_of_a_darts_perturbation_search_is_one_line(tmp_path, capsys):
    from dcanas.cli import main

    run_search(SearchConfig(**FAST, max_params=150_000), tmp_path / "run", progress=False)
    code = main(["land", str(tmp_path / "run"), "--max-params", "140K", "--run-dir", str(tmp_path / "landed")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--derive-by perturbation" in err, err
    assert not (tmp_path / "landed").exists()
