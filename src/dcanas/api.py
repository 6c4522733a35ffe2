"""The public Python API: search, train, build, load and count networks without the command line.

Every function takes the options the matching `dcanas` command takes, spelled as keyword arguments
(`max_params="1M"` for `--max-params 1M`), and raises a `DcanasError` subclass on bad input. Progress
bars show unless `progress=False`; messages go to the `logging.getLogger("dcanas")` logger.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


from .spaces.darts.cost import NetworkCost, network_cost
from .errors import ConfigError
from .logs import LOG
from .search_config import make_search_config
from .search_loop import SearchResult, run_search
from .spaces.darts.genotype import Genotype
from .spaces.darts.network import EvalNetwork, EvalSetting
from .train_loop import TrainResult, load_source, make_config, run_training, source_setting
from .units import parse_count

GenotypeLike = str | Path | Genotype


def _count_value(name: str, value: Any) -> float | None:
    """A budget given as a number or as text with a K/M/G suffix ("200K")."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return parse_count(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    raise ConfigError(f"{name} must be a number or text such as '200K', not {type(value).__name__}")


def search(dataset: str = "digits", *, run_dir: str | Path | None = None, unconstrained: bool = False,
           progress: bool = True, **options: Any) -> SearchResult:
    """Run a DCA-NAS search (the options of `dcanas search`, e.g. `max_params="200K"`, `epochs=5`)."""
    for name in ("max_params", "max_flops", "max_model_bytes", "max_memory"):  # latency is in ms: a plain number
        if name in options:
            options[name] = _count_value(name, options[name])
    config = make_search_config(dataset, unconstrained=unconstrained, **options)
    return run_search(config, run_dir, progress=progress, log=LOG.info)


def resume_search(run_dir: str | Path, *, progress: bool = True) -> SearchResult:
    """Continue an interrupted search exactly where its last checkpoint left it."""
    return run_search(None, run_dir, resume=True, progress=progress, log=LOG.info)


def train(genotype: GenotypeLike, *, run_dir: str | Path | None = None, progress: bool = True,
          **options: Any) -> TrainResult:
    """Train a genotype or a search run folder's result from scratch (the options of `dcanas train`)."""
    config = make_config(_spec(genotype), **options)
    return run_training(config, run_dir, progress=progress, log=LOG.info)


def create_model(genotype: GenotypeLike, dataset: str | None = None, **setting: Any) -> EvalNetwork:
    """An untrained evaluation network for `genotype` (a name, file, DARTS text, Genotype, or search run folder).

    A search run folder gives the network the search budgeted; otherwise `dataset` picks the published setting
    (default cifar10). `setting` overrides its fields: cells, channels, num_classes, in_channels, image_size, ...
    """
    spec = _spec(genotype)
    source = load_source(spec) if not isinstance(genotype, Genotype) else None
    base = source_setting(source, dataset, **setting)
    return EvalNetwork(genotype if isinstance(genotype, Genotype) else source.genotype, base)


def load_model(path: str | Path) -> EvalNetwork:
    """The trained network in a `model.pt` (or the run folder holding it), in eval mode; never runs code."""
    from .model_io import load_model as read_model_file

    net, _ = read_model_file(path)
    return net


def count(genotype: GenotypeLike, dataset: str | None = None, **setting: Any) -> NetworkCost:
    """Exact params (deployed, and with the auxiliary head) and FLOPs (MACs at batch 1) of a genotype's network (a
    search run folder's network as it searched it, unless `dataset` names another; else cifar10's)."""
    if isinstance(genotype, Genotype):
        return network_cost(genotype, source_setting(None, dataset, **setting))
    source = load_source(_spec(genotype))
    return network_cost(source.genotype, source_setting(source, dataset, **setting))


def _spec(genotype: GenotypeLike) -> str:
    """The text form the loaders take."""
    if isinstance(genotype, Genotype):
        from .spaces.darts.genotype import genotype_to_text

        return genotype_to_text(genotype)
    return str(genotype)


__all__ = ["search", "resume_search", "train", "create_model", "load_model", "count", "NetworkCost",
           "SearchResult", "TrainResult", "EvalNetwork", "EvalSetting"]
