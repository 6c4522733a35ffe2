"""Which landing rule picks the best NB201 architecture from a search's final weights? (how --rerank was chosen)

    python benchmarks/rerank_rules.py --collect RUNS_DIR=RESULTS_JSON ...   # once: the searches' final weights
    python benchmarks/rerank_rules.py

Every recorded search of BENCHMARKS.md §12's default (its final mixing weights, collected once from the run
folders into `final_weights.json`) is landed again by several rules, and each landing is looked up in
NAS-Bench-201's table. The candidates are the library's own (`NB201Space.landing_candidates`: the
architectures the alphas score highest in the fill's band; every none-free cell without a budget). Rules:

- `alphas`: the first candidate (the landing without --rerank);
- `oracle top-K`: the best *true* accuracy among the first K candidates (a ceiling no rule can pass);
- `PROXY top-K`: the best proxy score among the first K;
- `PROXY alone`: the best proxy score in the whole band, ignoring the alphas;
- `PROXY rank sum, top-K`: `proxies.rank_sum_choice` over the first K (what --rerank PROXY does);
- `synflow + PROXY rank sum, top-K`: the alphas' rank plus both proxies' ranks (an ensemble of proxies,
  as Abdelfattah et al. vote), over the first K (what --rerank synflow+PROXY does); `... alphas ignored`:
  the two proxies' ranks alone over the whole band;
- `... + budget share rank sum, 85-100 % band`: the alphas' first 500 in the whole 85-100 % band (not the floors'
  tightest band), each candidate's share of its budget (`constraint.budget_share`) voting beside the proxies
  (what --rerank synflow+meco+budget does).

`--floors` replaces the landing's band floors (e.g. `--floors 0.85`: rank the whole 85-100 % band).

A second table gives each rule's mean regret per budget, beside two ceilings: the best architecture of the
band the landing chooses from (the tightest of `FILL_FLOORS`, whatever the rule) and of the whole 85-100 %
band. Where the first ceiling is above 1 point of regret, no rule over these candidates meets the target.

Proxy scores are computed once per architecture with the library's proxies on networks built from seed 0
and cached in `nb201_proxies.json` (synflow and meco for all 4,096 none-free cells, ~4 min each on one
core; naswot on a
fixed batch of 64 CIFAR-10 training images, only for the first `--naswot-top` candidates of each search:
~1 s a network, 17 min for the 792 new ones of top-100). A
search run with --rerank builds its networks from its own seed instead, so `search_quality.py --extra
rerank=... --consensus 1` is the exact replay; this script compares rules.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from common import best_in_budget, budget_label, cost_of, final_weights, machine, study_command

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_WEIGHTS = RESULTS / "search_quality_knobs" / "final_weights.json"
DEFAULT_CACHE = RESULTS / "nb201_proxies.json"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10_jpg.tar.gz"
DEFAULT_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "nb201_cifar10_hw.csv"
NASWOT_TOP = 20  # naswot costs ~0.6 s a network: by default scored for each search's first 20 candidates only
WHOLE_BAND = 500  # --rerank-top's default; every band of §12's budgets holds fewer


def collect(specs: list[str], out: Path) -> None:
    """final_weights.json from RUNS_DIR=RESULTS_JSON pairs: each recorded run's budget, seed and final weights."""
    runs = []
    for spec in specs:
        runs_dir, results = spec.split("=", 1)
        for r in json.loads(Path(results).read_text())["runs"]:
            runs.append({"source": Path(results).name, "name": r["name"], "seed": r["seed"], "budget": r["budget"],
                         "mixing_weights": final_weights(Path(runs_dir) / r["name"])})
    out.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(f"{len(runs)} runs -> {out}")


def landing_inputs(run: dict[str, Any], table_path: str, cache: dict) -> tuple[list, list, Any]:
    """(alphas, budgets, cost table) of one recorded run, as its search landed it."""
    import torch

    from dcanas.search_config import SearchConfig
    from dcanas.spaces import SPACES

    b = run["budget"]
    key = json.dumps(b, sort_keys=True)
    if key not in cache:
        limits = {}
        if b and b["metric"] == "latency":
            limits = {"max_latency": b["limit"], "latency_device": b["device"]}
        elif b:
            limits = {"max_params": b["limit"]}
        config = SearchConfig(space="nb201", dataset="cifar10", bench_table=table_path, **limits)
        space = SPACES.get("nb201")
        cache[key] = (space.cost_table(space.eval_setting(config, 3, 10, 32), config), config.budgets())
    table, budgets = cache[key]
    alphas = [torch.log(torch.tensor(run["mixing_weights"]["alpha"], dtype=torch.float32).clamp_min(1e-30))]
    return alphas, budgets, table


def proxy_scores(archs: set, name: str, cache: dict, images: Any, seed: int = 0) -> None:
    """Fill cache[name][arch text] for `archs` with the library's proxy on networks built from `seed` (C=16, N=5,
    32 px)."""
    import torch
    from tqdm import tqdm

    from dcanas.proxies import proxy_score
    from dcanas.spaces import SPACES
    from dcanas.spaces.nb201.network import NB201Setting

    space, setting, scores = SPACES.get("nb201"), NB201Setting(), cache.setdefault(name, {})
    for arch in tqdm(sorted(archs - set(scores)), desc=name, leave=False):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = space.build_network(arch, setting)
        scores[arch] = proxy_score(name, net, images, seed, in_place=True)


def band_best(budget: dict[str, Any], floor: float, table_path: str) -> float:
    """The best CIFAR-10 accuracy among none-free architectures using floor..100 % of `budget`."""
    from common import bench_truth

    bench, _, none_free = bench_truth(table_path)
    cost = cost_of(budget, table_path)
    ok = none_free & (cost <= budget["limit"]) & (cost >= floor * budget["limit"])
    return float(bench.accuracy["cifar10"][ok].max())


def per_budget_lines(landings: list[dict], rules: dict[str, Callable[[dict], str]], accuracy: Callable[[str], float],
                     table_path: str) -> list[str]:
    """Markdown rows: each rule's mean regret per constrained budget (and its worst budget), then the ceilings."""
    keys = sorted({json.dumps(x["run"]["budget"], sort_keys=True) for x in landings if x["run"]["budget"]},
                  key=lambda k: (json.loads(k)["metric"], json.loads(k).get("device") or "", json.loads(k)["limit"]))
    groups = {k: [x for x in landings if json.dumps(x["run"]["budget"], sort_keys=True) == k] for k in keys}
    lines = ["| rule | " + " | ".join(budget_label(json.loads(k)) for k in keys) + " | worst budget |",
             "|---|" + "---|" * (len(keys) + 1)]

    def row(name: str, regret_of: Callable[[dict], float]) -> str:
        means = [statistics.mean(regret_of(x) for x in groups[k]) for k in keys]
        return f"| {name} | " + " | ".join(f"{m:.2f}" for m in means) + f" | {max(means):.2f} |"

    for name, rule in rules.items():
        lines.append(row(name, lambda x, rule=rule: x["best"] - accuracy(rule(x))))
    lines.append(row("ceiling: best of the landing's band", lambda x: x["best"] - max(map(accuracy, x["band"]))))
    lines.append(row("ceiling: best of the 85-100 % band",
                     lambda x: x["best"] - band_best(x["run"]["budget"], 0.85, table_path)))
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--collect", nargs="+", metavar="RUNS_DIR=RESULTS_JSON", help="write --weights from run folders")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--table", default=str(DEFAULT_TABLE))
    p.add_argument("--out", default=str(RESULTS / "rerank_rules.md"))
    p.add_argument("--naswot-top", type=int, default=NASWOT_TOP, help="score naswot for each search's first K candidates")
    p.add_argument("--proxy-seed", type=int, default=0, help="build the scored networks from this seed (use its own "
                   "--cache: the cache does not record the seed)")
    p.add_argument("--floors", type=float, nargs="+", help="the landing's band floors, tightest first (default: the "
                   "library's FILL_FLOORS); e.g. 0.85 ranks the whole 85-100 %% band")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.collect:
        return collect(args.collect, Path(args.weights))

    import numpy as np
    import torch

    from dcanas.constraint import budget_share
    from dcanas.data import load_dataset
    from dcanas.proxies import rank_sum_choice
    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import probe_batch
    from dcanas.spaces import SPACES
    from dcanas.spaces.nb201.arch import NUM_ARCHS
    from dcanas.spaces.nb201.bench import load_nb201_table

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.floors:
        import dcanas.spaces.nb201.space as nb201_space
        nb201_space.FILL_FLOORS = tuple(args.floors)
    runs = json.loads(Path(args.weights).read_text())["runs"]
    bench = load_nb201_table(args.table)
    accuracy = lambda arch: float(bench.accuracy["cifar10"][bench.row(arch)])  # noqa: E731
    space, tables = SPACES.get("nb201"), {}
    landings = []
    for run in runs:
        alphas, budgets, table = landing_inputs(run, args.table, tables)
        candidates = [space.to_text(a) for a in space.landing_candidates(alphas, table, budgets, WHOLE_BAND, True)]
        band = [space.to_text(a) for a in space.landing_candidates(alphas, table, budgets, NUM_ARCHS, True)]
        wide = space.landing_candidates(alphas, table, budgets, WHOLE_BAND, True, whole_band=True)
        landings.append({"run": run, "candidates": candidates, "band": band,
                         "wide": [space.to_text(a) for a in wide],
                         "shares": [budget_share(table, a, budgets) for a in wide] if budgets else None,
                         "best": best_in_budget(run["budget"], args.table)})

    cache_path = Path(args.cache)
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    data = load_dataset("imagefolder", args.data)
    images = probe_batch(data, SearchConfig(space="nb201", seed=0))
    for name in ("synflow", "meco"):  # cheap enough for every architecture of every band
        proxy_scores({a for x in landings for a in x["band"] + x["wide"]}, name, cache, images, args.proxy_seed)
        cache_path.write_text(json.dumps(cache) + "\n")
    proxy_scores({a for x in landings for a in x["candidates"][:args.naswot_top]}, "naswot", cache, images,
                 args.proxy_seed)
    cache_path.write_text(json.dumps(cache) + "\n")
    k_nas = args.naswot_top

    def top_by(proxy: str, k: int) -> Callable[[dict], str]:
        return lambda x: max(x["candidates"][:k], key=lambda a: cache[proxy][a])

    def rank_sum(proxy: str, k: int) -> Callable[[dict], str]:
        def rule(x: dict) -> str:
            top = x["candidates"][:k]
            return top[rank_sum_choice([[cache[proxy][a] for a in top]])[0]]
        return rule

    def ensemble_rank_sum(proxies: tuple[str, ...], k: int) -> Callable[[dict], str]:
        def rule(x: dict) -> str:
            top = x["candidates"][:k]
            return top[rank_sum_choice([[cache[p][a] for a in top] for p in proxies])[0]]
        return rule

    def budget_vote(proxies: tuple[str, ...], alphas: bool = True, weight: float = 1.0) -> Callable[[dict], str]:
        """The rank sum over the whole 85-100 % band with each candidate's budget share as one more voter (what
        --rerank synflow+meco+budget does), its rank counted `weight` times; without `alphas`, the voters alone."""
        def rule(x: dict) -> str:
            votes = [[cache[p][a] for a in x["wide"]] for p in proxies] + ([x["shares"]] if x["shares"] else [])
            ranks = rank_sum_choice(votes)[1]
            weights = [1.0] * len(proxies) + ([weight] if x["shares"] else [])
            return x["wide"][min(range(len(x["wide"])), key=lambda i: (
                (i if alphas else 0) + sum(w * r[i] for w, r in zip(weights, ranks)), i))]
        return rule

    def proxies_only(proxies: tuple[str, ...]) -> Callable[[dict], str]:
        def rule(x: dict) -> str:
            ranks = rank_sum_choice([[cache[p][a] for a in x["band"]] for p in proxies])[1]
            return x["band"][min(range(len(x["band"])), key=lambda i: (sum(r[i] for r in ranks), i))]
        return rule

    rules: dict[str, Callable[[dict], str]] = {
        "alphas (no rerank)": lambda x: x["candidates"][0],
        **{f"oracle top-{k} (ceiling)": (lambda k: lambda x: max(x["candidates"][:k], key=accuracy))(k) for k in (5, 20)},
        **{f"{p} top-{k}": top_by(p, k) for p in ("synflow", "naswot", "meco") for k in (5, 20)},
        **{f"{p} top-500": top_by(p, WHOLE_BAND) for p in ("synflow", "meco")},
        **{f"{p} alone (whole band, alphas ignored)": (lambda p: lambda x: max(x["band"], key=lambda a: cache[p][a]))(p)
           for p in ("synflow", "meco")},
        f"naswot rank sum, top-{k_nas}": rank_sum("naswot", k_nas),
        f"synflow rank sum, top-{NASWOT_TOP}": rank_sum("synflow", NASWOT_TOP),
        "synflow rank sum, top-100": rank_sum("synflow", 100),
        **{f"synflow + naswot rank sum, top-{k}": ensemble_rank_sum(("synflow", "naswot"), k)
           for k in sorted({NASWOT_TOP, k_nas})},
        "synflow rank sum, top-500 (the default before meco)": rank_sum("synflow", WHOLE_BAND),
        **{f"meco rank sum, top-{k}": rank_sum("meco", k) for k in (20, 100, WHOLE_BAND)},
        "synflow + meco rank sum, top-500 (the default before the budget vote)":
            ensemble_rank_sum(("synflow", "meco"), WHOLE_BAND),
        "synflow + meco rank sum, whole band, alphas ignored": proxies_only(("synflow", "meco")),
        "**synflow + meco + budget share rank sum, 85-100 % band, top-500 (--rerank default)**":
            budget_vote(("synflow", "meco")),
        **{f"synflow + meco + budget share x {w:g} rank sum, 85-100 % band": budget_vote(("synflow", "meco"), weight=w)
           for w in (0.25, 0.5, 0.75, 1.5)},
        "synflow + budget share rank sum, 85-100 % band": budget_vote(("synflow",)),
        "meco + budget share rank sum, 85-100 % band": budget_vote(("meco",)),
        "synflow + meco + budget share, 85-100 % band, alphas' top 500 unranked": budget_vote(("synflow", "meco"), False),
    }
    rows = ["| rule | unconstrained: CIFAR-10 % (min) | constrained: mean regret | runs < 90 % | min % | "
            "vs alphas: higher / lower / equal |", "|---|---|---|---|---|---|"]
    base = [accuracy(rules["alphas (no rerank)"](x)) for x in landings]
    for name, rule in rules.items():
        acc = [accuracy(rule(x)) for x in landings]
        free = [a for a, x in zip(acc, landings) if x["run"]["budget"] is None]
        regret = [x["best"] - a for a, x in zip(acc, landings) if x["run"]["budget"] is not None]
        cons = [a for a, x in zip(acc, landings) if x["run"]["budget"] is not None]
        diff = np.array(acc) - np.array(base)
        rows.append(f"| {name} | {statistics.mean(free):.2f} ± {statistics.stdev(free):.2f} ({min(free):.2f}) | "
                    f"{statistics.mean(regret):.2f} ± {statistics.stdev(regret):.2f} | {sum(a < 90 for a in cons)} | "
                    f"{min(cons):.2f} | {(diff > 1e-9).sum()} / {(diff < -1e-9).sum()} / {(abs(diff) <= 1e-9).sum()} |")
    per_budget = per_budget_lines(landings, rules, accuracy, args.table)
    n_free = sum(x["run"]["budget"] is None for x in landings)
    text = "\n".join([
        "# Landing rules on the recorded NB201 searches", "", "```", study_command("benchmarks/rerank_rules.py", argv), "```",
        "",
        f"{machine()}. {len(landings)} searches ({n_free} unconstrained, {len(landings) - n_free} constrained) from "
        f"{', '.join(sorted({x['run']['source'] for x in landings}))}; proxies of {len(cache['synflow'])} (synflow) "
        f"{len(cache['meco'])} (meco) and {len(cache['naswot'])} (naswot) architectures; {time.perf_counter() - t0:.0f} s.", "", *rows, "",
        "Mean regret (points) per budget; the ceilings are the best architecture of the band the landing chooses "
        "from, and of the whole 85-100 % band:", "", *per_budget, ""])
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
