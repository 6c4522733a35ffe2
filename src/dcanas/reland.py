"""`dcanas land`: a finished search landed in other budgets, without searching again.

With `--budget-scope landing` the budget never reaches the search (the unconstrained search of the same seed,
bit for bit), so one search serves every budget: its final mixing weights are landed in each one by the space's
exact landing (the alphas' best architectures in the budget's band, then `--rerank`), as `--repeats`
lands a consensus. A search that ran under a budget can be landed elsewhere too; its alphas then carry the
pull of the budget it ran under (the report says which).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, DcanasError, RunDirError
from .model_io import MODEL_FILE
from .runs import CHECKPOINT, clear_folder, prepare_run_dir, stopped_before_checkpoint, write_json
from .search_config import BUDGET_FIELDS, SearchConfig, check_benchmark_options
from .spaces import SPACES

LANDING_FIELDS = BUDGET_FIELDS + ("latency_device", "rerank", "rerank_top")


def land_search(search_dir: str | Path, landing: dict[str, Any], run_dir: str | Path | None = None,
                log: Callable[[str], None] = print) -> Any:
    """Land the finished search in `search_dir` in the budgets of `landing` (SearchConfig fields: max_params,
    max_latency + latency_device, ..., rerank); write a run folder of its own; return the SearchResult."""
    from .repeats import consensus_search
    from .report import write_search_report
    from .search_loop import prepare_search

    search_dir = Path(search_dir)
    unknown = sorted(set(landing) - set(LANDING_FIELDS))
    if unknown:
        raise ConfigError(f"a landing takes budgets and the rerank only, not {', '.join(unknown)}")
    searched, config = _finished_search(search_dir)
    check_benchmark_options(config.space, landing.get("latency_device"), None)
    if not SPACES.get(config.space).can_rerank:
        raise ConfigError(f"dcanas land lists the alphas' best architectures inside the new budget, which the "
                          f"{config.space} space cannot (search with the budget instead)")
    budgets_before = {k: getattr(config, k) for k in BUDGET_FIELDS if getattr(config, k) is not None}
    for name in BUDGET_FIELDS:  # the new budgets replace the search's own
        setattr(config, name, None)
    if config.rerank is None:  # saved before the default was written out: the rule the search landed with
        config.rerank = (searched.get("rerank") or {}).get("proxy", "none")
    for name, value in landing.items():
        if value is not None:
            setattr(config, name, value)
    config.budget_scope = "landing"
    if config.max_skips is not None:  # a derivation cap of the search's: the landing's list has no such cap
        log(f"note: the search's --max-skips {config.max_skips} does not apply to a landing (it lists genotypes "
            f"without that cap)")
        config.max_skips = None
    if not config.budgets():
        raise ConfigError("give the budget to land in (--max-params, --max-flops, or --max-latency with "
                          "--latency-device)")
    prepared = prepare_search(config)  # validates, and refuses a budget no network of this setting meets
    _check_weights(searched["mixing_weights"], SPACES.get(config.space), prepared[2], search_dir)
    existed = run_dir is not None and Path(run_dir).exists()
    out = prepare_run_dir(run_dir, False, f"{search_dir.name}-landed", resumable=False)  # refuses one holding files
    write_json(out / "config.json", config.to_dict())
    try:
        result = consensus_search(config, [searched["mixing_weights"]], prepared, out, searched["search_seconds"],
                                  searched.get("steps") or 0)
    except DcanasError:  # e.g. nothing listed meets a memory budget: leave no half-written landing behind
        if stopped_before_checkpoint(out):  # only what this landing wrote so far (a landing has no checkpoint)
            clear_folder(out)
            if not existed:
                out.rmdir()
        raise
    history = _history(search_dir)
    ran_under = ", ".join(f"{k.removeprefix('max_')} {v:g}" for k, v in budgets_before.items()) or "no budget"
    write_search_report(result, config, prepared[2], history, extra=[
        f"Landed by `dcanas land` from the search in `{search_dir}` (which ran under {ran_under}): its final "
        f"mixing weights, landed in the budgets above without searching again. The plots are that search's.", ""])
    log(f"landed {search_dir} in {', '.join(f'{b.metric} {b.limit:g}' for b in prepared[3])}: {out}")
    return result


def _check_weights(weights: Any, space: Any, table: Any, search_dir: Path) -> None:
    """Refuse in one line mixing weights that are not one [edges, ops] array per alpha of the search's space."""
    import numpy as np

    for name, costs in zip(space.alpha_names, table.alpha_costs("params")):
        try:
            shape = np.asarray(weights[name], dtype=np.float64).shape
        except (KeyError, TypeError, ValueError):
            shape = None
        if shape != costs.shape:
            raise RunDirError(f"{search_dir}/result.json's mixing weights do not fit its {space.name} search "
                              f"({name}: expected {list(costs.shape)}); search again")


def _finished_search(search_dir: Path) -> tuple[dict[str, Any], SearchConfig]:
    """The finished search's result.json and its config, or one line saying why it cannot be landed."""
    if not search_dir.is_dir():
        raise RunDirError(f"{search_dir} is not a folder; give the run folder of a finished `dcanas search`")
    if (search_dir / MODEL_FILE).is_file():
        raise RunDirError(f"{search_dir} is a training run; land the search run folder it trained")
    if not (search_dir / "result.json").is_file() or not (search_dir / "config.json").is_file():
        how = (f"finish it with `dcanas search --resume {search_dir}` first" if (search_dir / CHECKPOINT).is_file()
               else "give the run folder of a finished `dcanas search`")
        raise RunDirError(f"{search_dir} holds no finished search (config.json and result.json); {how}")
    try:
        searched = json.loads((search_dir / "result.json").read_text())
        config = SearchConfig.from_dict(json.loads((search_dir / "config.json").read_text()))
    except (ValueError, TypeError) as exc:
        raise RunDirError(f"{search_dir}'s config.json or result.json is unreadable ({exc})") from None
    if not searched.get("mixing_weights"):
        raise RunDirError(f"{search_dir} recorded no final mixing weights (it predates them); search again")
    return searched, config


def _history(search_dir: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((search_dir / "history.json").read_text())
    except (OSError, ValueError):
        return []
