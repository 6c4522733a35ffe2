"""Several searches with different seeds, keep the best: the paper's (and DARTS's) search protocol.

`dcanas search --repeats N` runs the same search with seeds seed, seed+1, ..., seed+N-1, each in its own
folder `RUN_DIR/seed<k>/` (in parallel processes where cores allow, one thread each), scores every derived
network by its accuracy on the search's validation half (the supernet run as the derived network, with
its shared weights: a one-shot score, where DARTS retrains each candidate briefly), and copies the winner's
genotype and result to RUN_DIR, so `dcanas train RUN_DIR` trains it. Every run's record stays in
RUN_DIR/repeats.json; `dcanas search --resume RUN_DIR` continues the whole set (finished runs are read
back, interrupted ones resume from their checkpoints).
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
# result.json is not copied: it is rewritten below with every run's record
WINNER_FILES = ("genotype.json", "genotype.txt", "report.md", "cell_normal.png", "cell_reduce.png", "cell.png")


def is_repeats_dir(path: str | Path | None) -> bool:
    """Whether `path` is the folder of a `--repeats` search."""
    return path is not None and (Path(path) / REPEATS_FILE).is_file()


def run_repeats(config: Any, repeats: int | None = None, run_dir: str | Path | None = None, *,
                resume: bool = False, jobs: int | None = None, log: Callable[[str], None] = print,
                progress: bool = True) -> dict[str, Any]:
    """Run (or resume) `repeats` seeds of `config`, keep the best derived network; returns its result dict."""
    from .lug import run_tasks
    from .search_config import SearchConfig
    from .search_loop import _run_name, prepare_search
    from .threads import available_cores

    if resume:
        run_dir = Path(run_dir)
        try:
            plan = json.loads((run_dir / REPEATS_FILE).read_text())
            config, seeds = SearchConfig.from_dict(plan["config"]), [int(s) for s in plan["seeds"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"{run_dir / REPEATS_FILE} is unreadable ({exc}); start a new search") from None
    else:
        if repeats is None or repeats < 1:
            raise ConfigError(f"--repeats must be a positive number of searches, got {repeats}")
        prepare_search(config)  # refuse bad budgets and options before anything is written
        seeds = [config.seed + k for k in range(repeats)]
        run_dir = prepare_run_dir(run_dir, False, _run_name(config) + f"-x{repeats}")
        write_json(run_dir / REPEATS_FILE, {"config": config.to_dict(), "seeds": seeds, "runs": []})
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--repeat-jobs must be at least 1, got {jobs}")
    on_cpu = config.device == "cpu" or (config.device == "auto" and not _cuda_available())
    jobs = jobs or (min(len(seeds), available_cores()) if on_cpu else 1)
    threads = config.threads or max(1, available_cores() // jobs)
    scored = replace(config, score_derived=True, threads=threads)
    tasks = [{"config": replace(scored, seed=s).to_dict(), "run_dir": str(Path(run_dir) / f"seed{s}"),
              "threads": threads, "seed": s} for s in seeds]
    log(f"{len(seeds)} searches (seeds {seeds[0]}..{seeds[-1]}), {min(jobs, len(seeds))} at a time, "
        f"{threads} thread(s) each, in {run_dir}")
    records = []
    bar = tqdm(total=len(tasks), desc="searches", disable=not progress, dynamic_ncols=True)
    for done in run_tasks(tasks, workers=jobs):  # one at a time in this process when jobs == 1
        result = done["result"]
        records.append({"seed": done["task"]["seed"], "run_dir": done["task"]["run_dir"],
                        "genotype": result["genotype"], "derived_val_acc": result.get("derived_val_acc"),
                        "params": result["params"], "flops": result["flops"], "budgets": result["budgets"],
                        "repairs": len(result["repairs"]), "search_seconds": result["search_seconds"],
                        **({"benchmark": result["benchmark"]} if "benchmark" in result else {})})
        bar.update(1)
    bar.close()
    records.sort(key=lambda r: r["seed"])
    best = select_best(records)
    winner = Path(best["run_dir"])
    for name in WINNER_FILES:
        if (winner / name).is_file():
            shutil.copyfile(winner / name, Path(run_dir) / name)
    result = json.loads((winner / "result.json").read_text())
    result.update(run_dir=str(run_dir), selected_seed=best["seed"], repeats=records)
    write_json(Path(run_dir) / "result.json", result)
    write_json(Path(run_dir) / REPEATS_FILE, {"config": config.to_dict(), "seeds": seeds, "runs": records,
                                              "selected_seed": best["seed"],
                                              "selection": "highest one-shot accuracy on the validation half"})
    return result


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
