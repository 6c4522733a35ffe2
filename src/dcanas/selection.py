"""How a finished search's architecture is read off its supernet: by the alphas, or by perturbation.

DARTS keeps, on every edge, the op with the largest alpha. DARTS-PT (Wang et al., "Rethinking Architecture
Selection in Differentiable NAS", ICLR 2021) showed that an op's alpha need not say how much the supernet
relies on it, and chose by perturbation instead: take one op out of its edge (its mixing weight to zero, the
others renormalised) and measure how much accuracy the supernet loses on held-out images. Here:

- **op choice**: on each edge, the op whose removal costs the most accuracy;
- **edge choice** (spaces whose nodes choose their inputs, DARTS): remove each whole edge (all its weight
  on `none`); each node keeps the inputs whose removal costs the most.

The op drops, in accuracy points, become the ranking logits that repair, fill and the landing rank by, so
the rest of the search's ending is unchanged. BatchNorm normalises with the statistics of each fixed batch,
as in the search (a supernet's running statistics were gathered on a moving mixture: on a short digits search
they gave chance accuracy where batch statistics gave 38 %). Alphas and BatchNorm buffers are restored after,
so the supernet is left as it was and a resumed search selects exactly as an uninterrupted one. DARTS-PT
fine-tunes the supernet between its choices; this one-shot variant does not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

DERIVATIONS: tuple[str, ...] = ("alphas", "perturbation")
DERIVE_IMAGES = 1024  # held-out images each perturbation is scored on (one image = 0.1 point at this size)
_REMOVED = -1e9  # an alpha this low gets mixing weight 0 under every remedy (softmax, Dirichlet mean)
_NEVER = 20.0  # how far below an edge's lowest drop a non-derivable op's logit sits (finite: logs stay defined)


@dataclass
class PerturbationScores:
    """Accuracy points the supernet loses when each op, or each whole edge, is taken out."""

    accuracy: float  # the untouched supernet's accuracy on the images, in points
    op_drops: list[torch.Tensor]  # per alpha tensor, [edges, ops]; nan for ops never derived (`none`)
    edge_drops: list[torch.Tensor] | None  # per alpha tensor, [edges]; None where the space keeps every edge
    images: int  # over all processes

    def logits(self) -> list[torch.Tensor]:
        """Ranking logits: the op drops, with the ops never derived far below every other op of their edge."""
        out = []
        for drops in self.op_drops:
            known = torch.nan_to_num(drops, nan=float("inf")).amin(dim=1, keepdim=True)
            out.append(torch.where(torch.isnan(drops), known - _NEVER, drops))
        return out

    def to_dict(self, alpha_names: tuple[str, ...]) -> dict[str, Any]:
        """JSON-ready record for result.json (drops rounded to 0.01 point; nan as null)."""
        def rows(t: torch.Tensor) -> list:
            return [None if v != v else round(v, 2) for v in t.tolist()] if t.dim() == 1 else [rows(r) for r in t]

        record: dict[str, Any] = {"by": "perturbation", "images": self.images,
                                  "supernet_accuracy": round(self.accuracy, 2),
                                  "op_drops": {n: rows(d) for n, d in zip(alpha_names, self.op_drops)}}
        if self.edge_drops is not None:
            record["edge_drops"] = {n: rows(d) for n, d in zip(alpha_names, self.edge_drops)}
        return record


SCORE_BATCH = 256  # at most this many images per forward: BatchNorm normalises over each


@torch.no_grad()
def supernet_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      total: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> float:
    """Top-1 accuracy in points of the supernet as it stands (its mixture cells and derived cells), in equal
    batches of at most SCORE_BATCH images (no small ragged last batch for BatchNorm to normalise over);
    `total` sums the counts over the processes that each hold a share of the images."""
    parts = max(1, -(-len(labels) // SCORE_BATCH))
    right = sum(int((model(x).argmax(1) == y).sum()) for x, y in zip(images.chunk(parts), labels.chunk(parts)))
    counts = total(torch.tensor([right, len(labels)], dtype=torch.float64, device=images.device))
    return 100.0 * float(counts[0]) / max(float(counts[1]), 1.0)


@torch.no_grad()
def perturbation_scores(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, none_index: int,
                        choose_edges: bool, total: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
                        progress: bool = False) -> PerturbationScores:
    """Each op's and (with `choose_edges`) each edge's accuracy drop when taken out of the supernet (`total`:
    as in `supernet_accuracy`, for images shared out over processes; `progress`: a bar over the evaluations)."""
    was_training = model.training
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    alphas = model.arch_parameters()
    saved = [a.detach().clone() for a in alphas]
    op_drops, edge_drops = [], []
    per_edge = sum(1 for o in range(saved[0].shape[1]) if o != none_index) + int(choose_edges)
    bar = tqdm(total=sum(a.shape[0] for a in saved) * per_edge, desc="derive by perturbation", disable=not progress,
               dynamic_ncols=True, leave=False)
    try:
        model.eval()  # evaluation mixing weights (no Dirichlet draws, no smoothing noise) ...
        for m in model.modules():  # ... but BatchNorm with batch statistics, as in the search
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
        base = supernet_accuracy(model, images, labels, total)
        for alpha, kept in zip(alphas, saved):
            ops = torch.full(kept.shape, float("nan"), dtype=torch.float64)
            edges = torch.zeros(kept.shape[0], dtype=torch.float64)
            for e in range(kept.shape[0]):
                for o in range(kept.shape[1]):
                    if o == none_index:
                        continue
                    alpha.copy_(kept)
                    alpha[e, o] = _REMOVED
                    ops[e, o] = base - supernet_accuracy(model, images, labels, total)
                    bar.update(1)
                if choose_edges:
                    alpha.copy_(kept)
                    alpha[e] = _REMOVED
                    alpha[e, none_index] = 0.0
                    edges[e] = base - supernet_accuracy(model, images, labels, total)
                    bar.update(1)
            alpha.copy_(kept)
            op_drops.append(ops)
            edge_drops.append(edges)
    finally:  # the supernet as it was: alphas, the running statistics batch statistics move, the mode
        bar.close()
        for alpha, kept in zip(alphas, saved):
            alpha.copy_(kept)
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
        model.train(was_training)
    images_seen = int(total(torch.tensor([len(labels)], dtype=torch.float64, device=images.device))[0])
    return PerturbationScores(base, op_drops, edge_drops if choose_edges else None, images_seen)
