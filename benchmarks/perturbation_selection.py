"""Derive finished DARTS searches again by perturbation (`--derive-by perturbation`), without searching again.

Each search's supernet checkpoint is loaded and ended exactly as `dcanas search --derive-by perturbation` ends
(`search_loop.derive_from_supernet`, then the same repair and fill): every op, and every edge, is taken out of
the supernet in turn and the accuracy it loses on `--derive-images` held-out images chooses the network
(selection.py). Writes one genotype JSON per search, to train with `dcanas train FILE`, and prints a table
against the alphas' own choice.

    python benchmarks/perturbation_selection.py runs/e2e_fm14_base/dcanas_500K_s{0,1,2}/search --out-dir runs/pt
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

PARAMETER_FREE = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("search_dirs", nargs="+", help="folders of finished `dcanas search --space darts` runs")
    p.add_argument("--derive-images", type=int, default=1024, help="held-out images each removal is scored on")
    p.add_argument("--out-dir", default="runs/perturbation_selection", help="where the genotype JSONs go")
    args = p.parse_args()

    from dcanas.search_config import SearchConfig
    from dcanas.proxies import scores_networks
    from dcanas.search_loop import _resizer, build_supernet, derive_from_supernet, derived_result, prepare_search, \
        probe_batch, search_halves
    from dcanas.spaces import SPACES
    from dcanas.threads import use_threads

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print("| search | supernet acc % | by alphas: parameter-free ops of the normal cell | by perturbation | "
          "params | budget | s |")
    print("|---|---|---|---|---|---|---|")
    for folder in map(Path, args.search_dirs):
        saved = json.loads((folder / "config.json").read_text())
        config = SearchConfig.from_dict({**saved, "derive_by": "perturbation", "derive_images": args.derive_images})
        data, setting, table, budgets = prepare_search(config)
        space = SPACES.get(config.space)
        use_threads(config.threads or 1)  # the search's own: the thread count changes the numerics
        model = build_supernet(config, data.in_channels, data.num_classes)
        model.load_state_dict(torch.load(folder / "checkpoint.pt", weights_only=True, map_location="cpu")["model"])
        model.update_derived()
        start = time.perf_counter()
        raw, logits, scores = derive_from_supernet(model, space, config, table, data, search_halves(data, config)[1],
                                                   _resizer(config.search_image_size, data.image_size),
                                                   torch.device("cpu"))
        probe = probe_batch(data, config) if scores_networks(config.rerank_proxy()) else None
        result = derived_result(space, config, raw, logits, setting, table, budgets, out, 0.0, 0, probe)
        seconds = time.perf_counter() - start
        name = folder.parent.name if folder.name == "search" else folder.name
        (out / f"{name}.json").write_text(json.dumps(space.to_dict(result.genotype)))
        (out / f"{name}_selection.json").write_text(json.dumps(scores.to_dict(space.alpha_names)))
        searched = json.loads((folder / "result.json").read_text())["genotype_json"]["normal"]
        free_before = Counter(op for op, _ in searched if op in PARAMETER_FREE)
        normal = space.to_dict(result.genotype)["normal"]
        free_after = Counter(op for op, _ in normal if op in PARAMETER_FREE)
        budget = ", ".join(f"{m} {b['value']:,.0f} / {b['limit']:,.0f}" for m, b in result.budgets.items()) or "-"
        print(f"| {name} | {scores.accuracy:.1f} | {sum(free_before.values())} {dict(free_before)} | "
              f"{sum(free_after.values())} {dict(free_after)}: {[op for op, _ in normal]} | {result.params:,} | "
              f"{budget} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
