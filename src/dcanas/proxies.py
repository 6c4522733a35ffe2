"""Zero-cost proxies: a score of an untrained network that ranks architectures without training them.

The landing's last step can use one to choose among the few architectures the search's alphas rank
highest inside the budget (`--rerank`). A short, low-resolution search is biased towards ops that
learn fast (on NAS-Bench-201 the 1x1 convolution); a proxy computed on the deployed network at full
size looks at the architecture itself, so the two disagree in useful ways (BENCHMARKS.md §12).

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

import torch
from torch import nn

from .errors import ConfigError
from .registry import Registry

if TYPE_CHECKING:
    from .spaces.base import SearchSpace

# name -> score(model, images): higher is better; images is a batch at the deployed size
PROXIES: Registry[Callable[[nn.Module, torch.Tensor], float]] = Registry("proxy", ConfigError)


@PROXIES.register("synflow")
def synflow_score(model: nn.Module, images: torch.Tensor) -> float:
    """log of sum |theta * dR/dtheta| with |theta| weights and an all-ones input of the images' shape (batch 1)."""
    net = copy.deepcopy(model).double().eval()  # double: the product of |weights| over depth overflows float32
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
    net = copy.deepcopy(model).float().train()
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


def proxy_score(name: str, model: nn.Module, images: torch.Tensor, seed: int = 0) -> float:
    """`name`'s score of `model` (a fresh copy is scored; `model` is left as it was) under a fixed RNG seed."""
    proxy = PROXIES.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return proxy(model, images)


def rerank(space: "SearchSpace", candidates: Sequence[Any], setting: Any, proxy: str, images: torch.Tensor,
           seed: int) -> tuple[Any, list[dict[str, Any]]]:
    """Of `candidates` (best-scored by the alphas first), the genotype whose deployed network `proxy` scores
    highest, and every candidate's record; each network is built from the same seed, so ties in the
    score are ties in the architecture, which go to the alphas' choice."""
    records, best = [], 0
    for rank, genotype in enumerate(candidates):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = space.build_network(genotype, setting)
        score = proxy_score(proxy, net, images, seed)
        records.append({"genotype": space.to_text(genotype), "alpha_rank": rank + 1, "score": score})
        if score > records[best]["score"]:
            best = rank
    records[best]["chosen"] = True
    return candidates[best], records
