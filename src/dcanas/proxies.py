"""Zero-cost proxies: a score of an untrained network that ranks architectures without training them.

The landing's last step can rank the architectures the search's alphas score highest inside the
budget by one as well, and take the best sum of both ranks (`--rerank`). A short, low-resolution
search is biased towards ops that learn fast (on NAS-Bench-201 the 1x1 convolution); a proxy computed
on the deployed network at full size looks at the architecture itself, so the two err differently
(BENCHMARKS.md §12). Under a budget, each candidate's share of it can vote the same way (``budget``): unused
budget is lost accuracy, and a vote lets the proxies outweigh it where a fuller network is a worse one.

- ``synflow`` (Tanaka et al. 2020; Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR
  2021): with every weight replaced by its absolute value and an all-ones input, the sum over
  parameters of |theta * dR/dtheta|, R the sum of the outputs. Data-free and deterministic. BatchNorm
  runs with fresh running statistics (eval mode), which makes it the identity, as the proxy's authors
  build the network without it.
- ``naswot`` (Mellor et al., "Neural Architecture Search without Training", ICML 2021): the log
  determinant of the Hamming-similarity kernel of the ReLU activation patterns a batch of images makes.
- ``meco`` (Jiang et al., "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum Eigenvalue
  of Correlation", NeurIPS 2023): the sum over layers of the smallest eigenvalue of the Pearson correlation
  between a layer's channels. Channels that copy each other (a cell of skips and pools, or convolutions
  whose outputs are nearly collinear) pull it towards 0.
"""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .registry import Registry

if TYPE_CHECKING:
    from .spaces.base import SearchSpace

# name -> score(model, images): higher is better; images is a batch at the deployed size. A proxy may change
# `model` (its weights, dtype, mode): proxy_score hands it a copy, rerank a network built for it.
PROXIES: Registry[Callable[[nn.Module, torch.Tensor], float]] = Registry("proxy", ConfigError)


@PROXIES.register("synflow")
def synflow_score(model: nn.Module, images: torch.Tensor) -> float:
    """log of sum |theta * dR/dtheta| with |theta| weights and an all-ones input of the images' shape (batch 1)."""
    net = model.double().eval()  # double: the product of |weights| over depth overflows float32
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    net.zero_grad(set_to_none=True)
    net(torch.ones((1, *images.shape[1:]), dtype=torch.float64, device=images.device)).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in net.parameters() if p.grad is not None)
    return math.log(total) if total > 0 else -math.inf


@PROXIES.register("naswot")
def naswot_score(model: nn.Module, images: torch.Tensor) -> float:
    """log det of K[i, j] = number of ReLUs on which images i and j agree (both active or both not)."""
    net = model.float().train()
    codes: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, inputs, _out: codes.append((inputs[0].detach() > 0).flatten(1)))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(images.float())
    finally:
        for hook in hooks:
            hook.remove()
    if not codes:
        raise ConfigError("the naswot proxy needs a network with ReLU activations")
    active = torch.cat(codes, 1).double()
    kernel = active @ active.T + (1 - active) @ (1 - active).T
    return float(torch.linalg.slogdet(kernel)[1])


MECO_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AvgPool2d, nn.MaxPool2d)
# MeCo's authors score one image. On NB201, 1 to 64 images rank alike (Spearman 0.92-0.94 on 200 cells, the
# landing rules within 0.03 points of regret with 1 or 8); one costs 0.05 s a network on one core, 64 twenty
# times that (BENCHMARKS.md §12)
MECO_IMAGES = 1


@PROXIES.register("meco")
def meco_score(model: nn.Module, images: torch.Tensor) -> float:
    """Sum over conv, norm, activation and pooling outputs of the least eigenvalue of their channels' correlation
    on the first `MECO_IMAGES` images."""
    net = model.float().train()  # batch statistics, as in training: fresh running statistics would be the identity
    least: list[float] = []

    def record(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
        if out.dim() != 4 or out.shape[1] < 2:
            return
        channels = out.detach().transpose(0, 1).flatten(1).double()  # C x (N*H*W): every pixel of every image
        corr = torch.nan_to_num(torch.corrcoef(channels), nan=0.0, posinf=0.0, neginf=0.0)  # constant channel: 0
        least.append(float(torch.linalg.eigvalsh(corr)[0]))

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, MECO_LAYERS)]
    try:
        with torch.no_grad():
            net(images[:MECO_IMAGES].float())
    finally:
        for hook in hooks:
            hook.remove()
    if not least:
        raise ConfigError("the meco proxy needs a network with 2-D convolution, normalisation or pooling layers")
    return sum(least)


def proxy_score(name: str, model: nn.Module, images: torch.Tensor, seed: int = 0, *, in_place: bool = False) -> float:
    """`name`'s score of `model` under a fixed RNG seed; a copy is scored unless `in_place` (then `model` may be
    changed: a network built only to be scored)."""
    proxy = PROXIES.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return proxy(model if in_place else copy.deepcopy(model), images)


# Not a proxy but a voter the landing ranks like one: each candidate's share of its budgets (the mean of cost /
# limit), higher first. Unused budget is lost accuracy; as a vote it replaces the hard rule "look in the top of
# the budget first" with a soft one the proxies can outvote (BENCHMARKS.md §12).
BUDGET_VOTER = "budget"


def proxy_names(spec: str) -> list[str]:
    """The voters a --rerank value names: one proxy, or several joined by '+' (each a registered name, or
    `BUDGET_VOTER`, once)."""
    names = spec.split("+")
    unknown = [n for n in names if n != BUDGET_VOTER and n not in PROXIES.names()]
    if unknown:
        raise ConfigError(f"unknown proxy {unknown[0]!r}; choose one of: {', '.join(PROXIES.names())}, or "
                          f"{BUDGET_VOTER} (each candidate's share of the budget), joined by '+'")
    if len(set(names)) < len(names):
        raise ConfigError(f"--rerank {spec} names a proxy twice; join different ones, e.g. synflow+meco")
    return names


def votes_on_budget(spec: str | None) -> bool:
    """Whether a --rerank value ranks the candidates by their share of the budget too (then the landing lists
    the whole budget band, not its top first)."""
    return spec is not None and spec != "none" and BUDGET_VOTER in proxy_names(spec)


def scores_networks(spec: str | None) -> bool:
    """Whether a --rerank value names a proxy that scores networks (which needs a batch of images)."""
    return spec is not None and spec != "none" and any(n != BUDGET_VOTER for n in proxy_names(spec))


def proxy_ranks(record: dict[str, Any], proxy: str) -> dict[str, int]:
    """Each voter's rank of one --rerank candidate record (runs before several proxies recorded one rank)."""
    return record["ranks"] if "ranks" in record else {proxy: record["proxy_rank"]}


def proxy_scores_of(record: dict[str, Any], proxy: str) -> dict[str, float]:
    """Each voter's score of one --rerank candidate record (runs before several proxies recorded one score)."""
    return record["scores"] if "scores" in record else {proxy: record["score"]}


def rank_sum_choice(scores: Sequence[Sequence[float]]) -> tuple[int, list[list[int]]]:
    """Given each proxy's scores of the candidates in the alphas' order (best first), the index with the best
    sum of its alpha rank and its proxy ranks (ties to the alphas' order), and each proxy's ranks of the
    candidates (1 = best; equal scores share the worse rank)."""
    n = len(scores[0])
    ranks = [[n - int(b) for b in np.searchsorted(np.sort(np.asarray(s, dtype=np.float64)), s, side="left")]
             for s in scores]  # n minus the number strictly lower
    best = min(range(n), key=lambda i: (i + sum(r[i] for r in ranks), i))
    return best, ranks


def rerank(space: "SearchSpace", candidates: Sequence[Any], setting: Any, proxy: str, images: torch.Tensor | None,
           seed: int, budget_use: Sequence[float] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Of `candidates` (best-scored by the alphas first), the genotype with the best sum of its rank by the
    alphas and its rank by each voter `proxy` names ("synflow+meco": both proxies, each scoring the deployed
    network built from `seed`; "budget": `budget_use`, dropped without one), ties to the alphas' order; and
    every candidate's record.

    Neither signal alone is trusted: on NAS-Bench-201 a proxy alone ignores the search and the alphas of a
    short search favour cells that learn fast; their rank sum landed best, and best with two proxies that
    err differently and the budget's share as a third voter (BENCHMARKS.md §12).
    """
    names = [n for n in proxy_names(proxy) if n != BUDGET_VOTER or budget_use is not None]
    networks = [n for n in names if n != BUDGET_VOTER]
    scores: dict[str, list[float]] = {n: [] for n in networks}
    for genotype in candidates if networks else ():
        if images is None:
            raise ConfigError(f"--rerank {proxy} needs a batch of images to score the candidates on")
        for name in networks:  # a proxy may change the network it scores: each gets its own, built from the seed
            with torch.random.fork_rng(devices=[]):  # (building again costs less than half a deep copy)
                torch.manual_seed(seed)
                net = space.build_network(genotype, setting)
            scores[name].append(proxy_score(name, net, images, seed, in_place=True))
    if BUDGET_VOTER in names:
        scores[BUDGET_VOTER] = [float(u) for u in budget_use]  # type: ignore[union-attr]
    # only the budget was named, and there is none: no voter, the alphas alone
    best, ranks = rank_sum_choice([scores[n] for n in names]) if names else (0, [])
    records = [{"genotype": space.to_text(g), "alpha_rank": i + 1,
                "proxy_rank": sum(r[i] for r in ranks),  # the sum of the voters' ranks, which the choice adds
                "ranks": {n: r[i] for n, r in zip(names, ranks)}, "scores": {n: scores[n][i] for n in names}}
               for i, g in enumerate(candidates)]
    records[best]["chosen"] = True
    return candidates[best], records
