"""Remedies against the collapse of differentiable search onto parameter-free ops, switchable per search.

A first-order DARTS search favours skip connections and pooling: they help the supernet's loss early,
while the convolutions' weights are still untrained, and the alphas then lock that in (DARTS finds
54.3 % on NAS-Bench-201, its all-skip cell). Each remedy here is an established fix that touches only
how alphas become mixing weights or the alpha loss, so it applies to every search space:

- ``beta-decay`` (beta-DARTS, Ye et al. 2022): adds w(t) * mean over edges of logsumexp(alpha_edge)
  to the alpha loss. Its gradient on alpha_edge is w * softmax(alpha_edge) / edges, so the op that
  already dominates an edge is decayed most and no op runs away early; w(t) ramps linearly from 0 to
  `beta_weight` over the alpha steps of the search.
- ``dirichlet`` (DrNAS, Chen et al. 2021): the mixing weights of an edge are drawn, at every training
  forward, from a Dirichlet distribution with concentration ELU(alpha) + 1 (reparameterised, so alpha
  still gets gradients); evaluation and discretisation use its mean. The sampling noise keeps every op
  exercised and regularises the supernet towards flat, robust regions.
- ``none``: plain softmax (DARTS, the paper's DCA-NAS).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError

REMEDIES: tuple[str, ...] = ("none", "beta-decay", "dirichlet")
DEFAULT_REMEDY = "beta-decay"  # measured best on NAS-Bench-201 (BENCHMARKS.md, search quality)
DEFAULT_BETA_WEIGHT = 5.0


def check_remedy(name: str) -> str:
    """The remedy's name, or one clear error listing the valid ones."""
    if name not in REMEDIES:
        raise ConfigError(f"unknown --remedy {name!r}; choose one of: {', '.join(REMEDIES)}")
    return name


def mixing_weights(alpha: torch.Tensor, remedy: str = "none", training: bool = False,
                   perturbation: torch.Tensor | None = None) -> torch.Tensor:
    """The weights an edge mixes its candidate ops with ([..., ops], rows sum to one; plus `perturbation`, SDARTS's
    random smoothing, when given: then rows no longer sum to one)."""
    if remedy == "dirichlet":
        concentration = F.elu(alpha.float()) + 1.0
        if training:
            weights = torch.distributions.Dirichlet(concentration).rsample().to(alpha.dtype)
        else:
            weights = (concentration / concentration.sum(-1, keepdim=True)).to(alpha.dtype)
    else:
        weights = F.softmax(alpha, dim=-1)
    return weights if perturbation is None else weights + perturbation.to(weights.dtype)


def random_perturbations(alphas: list[torch.Tensor], bound: float) -> list[torch.Tensor] | None:
    """SDARTS-RS: uniform noise in [-bound, bound] for each alpha's mixing weights (None when bound is 0). Drawn
    once per weight step from the global generator, so every micro-batch, and every process (seeded alike),
    sees the same perturbation."""
    if bound <= 0:
        return None
    return [torch.empty_like(a, dtype=torch.float32).uniform_(-bound, bound).to(a.dtype) for a in alphas]


def ranking_logits(alpha: torch.Tensor, remedy: str = "none") -> torch.Tensor:
    """Logits whose softmax equals the evaluation-time mixing weights (what derivation and repair rank by)."""
    if remedy == "dirichlet":
        return torch.log(mixing_weights(alpha.detach(), remedy, training=False).float())
    return alpha.detach()


def beta_decay_loss(alphas: list[torch.Tensor]) -> torch.Tensor:
    """beta-DARTS's regulariser: the mean over all edges of logsumexp(alpha_edge)."""
    return torch.cat([torch.logsumexp(a.float(), dim=-1).reshape(-1) for a in alphas]).mean()


def _ramp(step: int, total_steps: int) -> float:
    """0 at the first of `total_steps` steps, 1 at the last (and after)."""
    return min(1.0, step / max(total_steps - 1, 1))


def alpha_noise_level(step: int, total_steps: int, final_noise: float) -> float:
    """SDARTS-RS's perturbation bound after `step` of `total_steps`: a linear ramp from a tenth of `final_noise`
    to all of it (its paper ramps 0.03 -> 0.3)."""
    return final_noise * (0.1 + 0.9 * _ramp(step, total_steps))


def beta_decay_weight(step: int, total_steps: int, final_weight: float) -> float:
    """The regulariser's weight after `step` of `total_steps` alpha steps: a linear ramp from 0."""
    return final_weight * _ramp(step, total_steps)
