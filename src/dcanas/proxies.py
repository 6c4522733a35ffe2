"""Zero-cost proxies: a score of an untrained network that ranks architectures without training them.

The landing's last step can rank the architectures the search's alphas score highest inside the
budget by one as well, and take the best sum of both ranks (`--rerank`). A short, low-resolution
search is biased towards ops that learn fast (on NAS-Bench-201 the 1x1 convolution); a proxy computed
on the deployed network at full size looks at the architecture itself, so the two err differently
(BENCHMARKS.md §12).

- ``synflow`` (Tanaka et al. 2020; Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR
  2021): with every weight replaced by its absolute value and an all-ones input, the sum over
  parameters of |theta * dR/dtheta|, R the sum of the outputs. Data-free and deterministic. BatchNorm
  runs with fresh running statistics (eval mode), which makes it the identity, as the proxy's authors
  build the network without it.
- ``naswot`` (Mellor et al., "Neural Architecture Search without Training", ICML 2021): the log
  determinant of the Hamming-similarity kernel of the ReLU activation patterns a batch of images makes.
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


def proxy_score(name: str, model: nn.Module, images: torch.Tensor, seed: int = 0, *, in_place: bool = False) -> float:
    """`name`'s score of `model` under a fixed RNG seed; a copy is scored unless `in_place` (then `model` may be
    changed: a network built only to be scored)."""
    proxy = PROXIES.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return proxy(model if in_place else copy.deepcopy(model), images)


def rank_sum_choice(scores: Sequence[float]) -> tuple[int, list[int]]:
    """Given proxy scores of candidates in the alphas' order (best first), the index with the best sum of
    alpha rank and proxy rank (ties to the alphas' order), and each candidate's proxy rank (1 = best; equal
    scores share the worse rank)."""
    n = len(scores)
    below = np.searchsorted(np.sort(np.asarray(scores, dtype=np.float64)), scores, side="left")  # strictly lower
    best = max(range(n), key=lambda i: ((n - 1 - i) + int(below[i]), -i))
    return best, [n - int(b) for b in below]


def rerank(space: "SearchSpace", candidates: Sequence[Any], setting: Any, proxy: str, images: torch.Tensor,
           seed: int) -> tuple[Any, list[dict[str, Any]]]:
    """Of `candidates` (best-scored by the alphas first), the genotype with the best sum of its rank by the
    alphas and its rank by `proxy` (of its deployed network, built from `seed`), ties to the alphas' order;
    and every candidate's record.

    Neither signal alone is trusted: on NAS-Bench-201 the proxy alone ignores the search and the alphas of
    a short search favour cells that learn fast; their rank sum landed best (BENCHMARKS.md §12).
    """
    scores = []
    for genotype in candidates:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = space.build_network(genotype, setting)
        scores.append(proxy_score(proxy, net, images, seed, in_place=True))
    best, proxy_rank = rank_sum_choice(scores)
    records = [{"genotype": space.to_text(g), "alpha_rank": i + 1, "proxy_rank": proxy_rank[i],
                "score": scores[i]} for i, g in enumerate(candidates)]
    records[best]["chosen"] = True
    return candidates[best], records
