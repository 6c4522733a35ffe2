"""Choose a finished DARTS search's ops by perturbation instead of by alpha (a diagnostic, not yet a library option).

DARTS-PT (Wang et al., "Rethinking Architecture Selection in Differentiable NAS", ICLR 2021) observed that an
op's alpha need not say how much the supernet relies on it: remove the op from its edge and measure how much the
supernet's accuracy drops. Here, on a finished search's supernet (its checkpoint, no further training): each
edge's op is the one whose removal (its alpha set to -inf, the others renormalised) costs the most accuracy on
`--images` training images; each node keeps the two edges whose chosen op costs most; the budget is then met by
the library's own repair and fill, ranked by those accuracy drops. Writes one genotype JSON per search.

    python benchmarks/perturbation_selection.py runs/e2e_fm14_base/dcanas_500K_s{0,1,2}/search --out-dir runs/pt
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

PARAMETER_FREE = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of `model` (eval mode) on the images, in batches of 256."""
    with torch.no_grad():
        right = sum(int((model(images[i:i + 256]).argmax(1) == labels[i:i + 256]).sum())
                    for i in range(0, len(labels), 256))
    return right / len(labels)


def op_drops(model: torch.nn.Module, alpha: torch.nn.Parameter, images: torch.Tensor, labels: torch.Tensor,
             ops: tuple[str, ...]) -> torch.Tensor:
    """[edges, ops]: the accuracy lost when each op is removed from its edge (none: -inf, never chosen)."""
    base = accuracy(model, images, labels)
    kept = alpha.data.clone()
    drops = torch.full_like(kept, float("-inf"))
    for edge in range(kept.shape[0]):
        for o, name in enumerate(ops):
            if name == "none":
                continue
            alpha.data.copy_(kept)
            alpha.data[edge, o] = -1e9
            drops[edge, o] = base - accuracy(model, images, labels)
    alpha.data.copy_(kept)
    return drops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("search_dirs", nargs="+", help="folders of finished `dcanas search` runs (darts space)")
    p.add_argument("--images", type=int, default=1024, help="training images the drops are measured on")
    p.add_argument("--out-dir", default="runs/perturbation_selection", help="where the genotype JSONs go")
    args = p.parse_args()

    from dcanas.data.stream import make_loader
    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import build_supernet, prepare_search
    from dcanas.spaces import SPACES
    from dcanas.spaces.darts.genotype import make_genotype, save_genotype
    from dcanas.spaces.darts.ops import PRIMITIVES
    from dcanas.spaces.darts.supernet import edge_sources

    torch.set_num_threads(1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print("| search | supernet acc | alphas' normal cell: parameter-free ops | by perturbation | params | budget |")
    print("|---|---|---|---|---|---|")
    for folder in map(Path, args.search_dirs):
        config = SearchConfig.from_dict(json.loads((folder / "config.json").read_text()))
        data, setting, table, budgets = prepare_search(config)
        space = SPACES.get(config.space)
        model = build_supernet(config, data.in_channels, data.num_classes)
        model.load_state_dict(torch.load(folder / "checkpoint.pt", weights_only=True, map_location="cpu")["model"])
        model.update_derived()
        model.eval()
        count = min(args.images, len(data.train_y))
        ids = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(config.seed))[:count]
        # the library's own loader: unaugmented and normalised as the search saw its images
        images, labels = next(iter(make_loader(data, "train", ids, count, augment=None, seed=config.seed,
                                               shuffle=False)))
        images = images.float()
        drops = [op_drops(model, getattr(model, name), images, labels, PRIMITIVES) for name in space.alpha_names]
        rows = edge_sources(len(model.genotype.normal) // 2)
        cells = []
        for d in drops:
            best, op = d.max(dim=1)
            edges = []
            for node in sorted({j for _, j in rows}):
                incoming = [r for r, (_, j) in enumerate(rows) if j == node]
                top = sorted(sorted(incoming, key=lambda r: (-float(best[r]), r))[:2])
                edges += [(PRIMITIVES[int(op[r])], rows[r][0]) for r in top]
            cells.append(edges)
        genotype = make_genotype(*cells)
        ranking = [torch.where(torch.isinf(d), torch.full_like(d, -1e4), d * 100.0) for d in drops]  # logits
        if budgets:
            genotype, _ = space.repair(genotype, ranking, table, budgets)
            genotype, _ = space.fill(genotype, ranking, table, budgets)
        cost = table.genotype_cost(genotype)
        name = folder.parent.name if folder.name == "search" else folder.name
        save_genotype(genotype, out / f"{name}.json")
        (out / f"{name}_drops.json").write_text(json.dumps({n: d.tolist() for n, d in zip(space.alpha_names, drops)}))
        searched = json.loads((folder / "result.json").read_text())["genotype_json"]["normal"]
        free_before = Counter(op for op, _ in searched if op in PARAMETER_FREE)
        free_after = Counter(op for op, _ in genotype.normal if op in PARAMETER_FREE)
        budget = ", ".join(f"{b.metric} {cost[b.metric]:,.0f} / {b.limit:,.0f}" for b in budgets) or "-"
        print(f"| {name} | {accuracy(model, images, labels):.3f} | {sum(free_before.values())} {dict(free_before)} | "
              f"{sum(free_after.values())} {dict(free_after)}: {[op for op, _ in genotype.normal]} | "
              f"{cost['params']:,.0f} | {budget} |", flush=True)


if __name__ == "__main__":
    main()
