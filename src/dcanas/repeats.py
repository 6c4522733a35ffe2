"""Several searches with different seeds, one network from them: the paper's search protocol, and a steadier one.

`dcanas search --repeats N` runs the same search with seeds seed, seed+1, ..., seed+N-1, each in its own
folder `RUN_DIR/seed<k>/` (in parallel processes where cores allow, one thread each), then makes one network
of them in RUN_DIR, so `dcanas train RUN_DIR` trains it (`--repeat-select`):

- ``consensus`` (default): every edge's mixing weights averaged over the N searches, derived once and landed
  in the budgets as a single search's are (repair, fill). A search's final ranking of two close ops is
  decided by its seed; the average keeps what the searches agree on (on NAS-Bench-201 it removed the
  one-seed failures, BENCHMARKS.md §12).
- ``one-shot``: keep the search whose derived network scores best on the search's validation half, run by the
  supernet with its shared weights (the paper's "highest validation accuracy"; on NAS-Bench-201 this
  score turned out anti-correlated with the true accuracy).

Every run's record stays in RUN_DIR/repeats.json; `dcanas search --resume RUN_DIR` continues the whole set
(finished runs are read back, interrupted ones resume from their checkpoints).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from .errors import ConfigError, RunDirError
from .runs import prepare_run_dir, write_json

REPEATS_FILE = "repeats.json"
SELECTIONS = ("consensus", "one-shot")
DEFAULT_SELECTION = "consensus"  # measured on NAS-Bench-201: BENCHMARKS.md §12
# result.json is not copied: it is rewritten below with every run's record
WINNER_FILES = ("genotype.json", "genotype.txt", "report.md", "cell_normal.png", "cell_reduce.png", "cell.png")


def is_repeats_dir(path: str | Path | None) -> bool:
    """Whether `path` is the folder of a `--repeats` search."""
    return path is not None and (Path(path) / REPEATS_FILE).is_file()


def run_repeats(config: Any, repeats: int | None = None, run_dir: str | Path | None = None, *,
                resume: bool = False, jobs: int | None = None, select: str = DEFAULT_SELECTION,
                log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) `repeats` seeds of `config` and make one network of them (`select`); returns its result dict."""
    from .lug import run_tasks
    from .search_config import SearchConfig
    from .search_loop import _run_name, prepare_search
    from .threads import available_cores

    if jobs is not None and jobs < 1:  # before anything is written
        raise ConfigError(f"--repeat-jobs must be at least 1, got {jobs}")
    if resume:
        run_dir = Path(run_dir)
        try:
            plan = json.loads((run_dir / REPEATS_FILE).read_text())
            config, seeds = SearchConfig.from_dict(plan["config"]), [int(s) for s in plan["seeds"]]
            select = plan.get("select", "one-shot")  # a set from before consensus selected one-shot
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"{run_dir / REPEATS_FILE} is unreadable ({exc}); start a new search") from None
        prepared = prepare_search(config)
    else:
        if repeats is None or repeats < 1:
            raise ConfigError(f"--repeats must be a positive number of searches, got {repeats}")
        if select not in SELECTIONS:
            raise ConfigError(f"unknown --repeat-select {select!r}; choose one of: {', '.join(SELECTIONS)}")
        prepared = prepare_search(config)  # refuse bad budgets and options before anything is written
        config = config.with_rerank_pinned()
        seeds = [config.seed + k for k in range(repeats)]
        run_dir = prepare_run_dir(run_dir, False, _run_name(config) + f"-x{repeats}")
        write_json(run_dir / REPEATS_FILE, {"config": config.to_dict(), "seeds": seeds, "select": select, "runs": []})
    on_cpu = config.device == "cpu" or (config.device == "auto" and not _cuda_available())
    jobs = jobs or (min(len(seeds), available_cores()) if on_cpu else 1)
    threads = config.threads or max(1, available_cores() // jobs)
    scored = replace(config, score_derived=True, threads=threads)
    tasks = [{"config": replace(scored, seed=s).to_dict(), "run_dir": str(Path(run_dir) / f"seed{s}"),
              "threads": threads, "seed": s} for s in seeds]
    log(f"{len(seeds)} searches (seeds {seeds[0]}..{seeds[-1]}), {min(jobs, len(seeds))} at a time, "
        f"{threads} thread(s) each, in {run_dir}; then {select}")
    records = []
    bar = tqdm(total=len(tasks), desc="searches", disable=not progress, dynamic_ncols=True)
    for done in run_tasks(tasks, workers=jobs):  # one at a time in this process when jobs == 1
        result = done["result"]
        records.append({"seed": done["task"]["seed"], "run_dir": done["task"]["run_dir"],
                        "genotype": result["genotype"], "derived_val_acc": result.get("derived_val_acc"),
                        "params": result["params"], "flops": result["flops"], "budgets": result["budgets"],
                        "repairs": len(result["repairs"]), "search_seconds": result["search_seconds"],
                        "steps": result["steps"], "mixing_weights": result.get("mixing_weights"),
                        "edge_drops": result.get("derivation", {}).get("edge_drops"),
                        **({"benchmark": result["benchmark"]} if "benchmark" in result else {})})
        bar.update(1)
    bar.close()
    records.sort(key=lambda r: r["seed"])
    if select == "consensus":
        result = consensus_result(config, records, Path(run_dir), prepared)
        result.update(selected_seed=None, selection="consensus", repeats=records)
        selection = f"consensus: every edge's mixing weights averaged over the {len(records)} searches"
    else:
        best = select_best(records)
        winner = Path(best["run_dir"])
        for name in WINNER_FILES:
            if (winner / name).is_file():
                shutil.copyfile(winner / name, Path(run_dir) / name)
        result = json.loads((winner / "result.json").read_text())
        result.update(run_dir=str(run_dir), selected_seed=best["seed"], selection="one-shot", repeats=records)
        selection = "highest one-shot accuracy on the validation half"
    write_json(Path(run_dir) / "result.json", result)
    write_json(Path(run_dir) / REPEATS_FILE, {"config": config.to_dict(), "seeds": seeds, "select": select,
                                              "runs": records, "selected_seed": result["selected_seed"],
                                              "selection": selection})
    return result


def consensus_search(config: Any, weight_sets: list[dict[str, list]], prepared: tuple, run_dir: Path,
                     seconds: float = 0.0, steps: int = 0,
                     edge_strength_sets: list[dict[str, list]] | None = None) -> Any:
    """The SearchResult of several searches' final mixing weights (one {alpha name: weights} per search)
    averaged edge by edge, derived once and landed in the budgets (repair, fill) as one search's are;
    `seconds` and `steps` are the searches' together. `edge_strength_sets` (--derive-by perturbation's edge
    drops, one {alpha name: [edges]} per search) are averaged alike and choose each node's inputs."""
    import numpy as np
    import torch

    from .proxies import scores_networks
    from .search_loop import derived_result, probe_batch
    from .spaces import SPACES
    from .threads import choose_threads, use_threads

    data, setting, table, budgets = prepared
    space = SPACES.get(config.space)
    averaged = {name: np.mean([np.asarray(w[name], dtype=np.float64) for w in weight_sets], axis=0)
                for name in space.alpha_names}
    # the log of the averaged weights: ranking logits whose softmax is exactly that average
    logits = [torch.log(torch.as_tensor(averaged[name], dtype=torch.float32).clamp_min(1e-30))
              for name in space.alpha_names]
    probe = probe_batch(data, config) if scores_networks(config.rerank_proxy()) else None
    # the searches' own thread rule: --rerank builds and scores hundreds of networks here
    before = torch.get_num_threads()
    use_threads(choose_threads(data.image_numel, "cpu", config.threads))
    try:
        strength = None if edge_strength_sets is None else [
            torch.as_tensor(np.mean([np.asarray(d[name], dtype=np.float64) for d in edge_strength_sets], axis=0))
            for name in space.alpha_names]
        return derived_result(space, config, space.derive(logits, config, strength), logits, setting, table, budgets,
                              run_dir, seconds, steps, probe)
    finally:
        use_threads(before)


def consensus_result(config: Any, records: list[dict[str, Any]], run_dir: Path, prepared: tuple) -> dict[str, Any]:
    """`consensus_search` of the set's finished searches, written to the set's folder (genotype, result,
    report); returns the result dict."""
    from .report import write_search_report

    if not records:
        raise RunDirError("no search of the set finished")
    missing = [r["seed"] for r in records if not r.get("mixing_weights")]
    if missing:
        raise RunDirError(f"the searches of seeds {missing} recorded no mixing weights (made before consensus "
                          f"selection); start a new set")
    drops = [r.get("edge_drops") for r in records]
    result = consensus_search(config, [r["mixing_weights"] for r in records], prepared, run_dir,
                              sum(r["search_seconds"] for r in records), sum(r.get("steps") or 0 for r in records),
                              edge_strength_sets=drops if all(drops) else None)
    runs = [f"| {r['seed']} | `{r['genotype']}` |" for r in records]
    write_search_report(result, config, prepared[2], [{"epoch": config.epochs - 1, "alphas": result.mixing_weights}],
                        extra=[f"Consensus of {len(records)} searches (`--repeats {len(records)}`): the genotype "
                               f"above is derived from every edge's mixing weights averaged over them (the "
                               f"heat map), then landed in the budgets like one search's. Steps and seconds "
                               f"are all searches' together.", "", "| seed | its own genotype |", "|---|---|",
                               *runs, ""])
    return {**json.loads((run_dir / "result.json").read_text()), "consensus_of": [r["seed"] for r in records]}


def select_best(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose derived network scored highest on validation (ties: the lower seed); within budget first."""
    if not records:
        raise RunDirError("no search of the set finished")
    return max(records, key=lambda r: (all(b["ok"] for b in r["budgets"].values()),
                                       r["derived_val_acc"] if r["derived_val_acc"] is not None else -1.0,
                                       -r["seed"]))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
