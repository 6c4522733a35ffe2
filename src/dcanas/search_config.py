"""What a search depends on (`SearchConfig`), checked once (`validate`), and built from defaults, the
dataset's preset and what the user typed (`make_search_config`). Its own module so that the search
spaces, the LUG and the CLI can name it without importing the search loop."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .checks import (MAX_CELLS, MAX_CHANNELS, MAX_IMAGE_SIZE, check_device, int_in, positive, raise_first,
                     rate_check)
from .constraint import BUDGET_SCOPES, Budget
from .data import dataset_info
from .errors import ConfigError
from .units import DTYPE_BYTES, readable
from .proxies import proxy_names
from .remedies import DEFAULT_BETA_WEIGHT, DEFAULT_REMEDY, check_remedy
from .selection import DERIVATIONS, DERIVE_IMAGES
from .spaces import SPACES


@dataclass
class SearchConfig:
    """Everything a search depends on; saved into the run folder and restored by --resume."""

    space: str = "darts"  # or "nb201"
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    data_mode: str = "auto"  # "memory", "stream" (decode batches in workers), or "auto" (stream when too big)
    strict_images: bool = False  # a streamed set: refuse an unreadable image instead of skipping it
    data_workers: int | None = None  # a streamed set: decoding processes (None: one per spare core, at most 8)
    # budgets on the deployed network (None = unconstrained)
    max_params: float | None = None
    max_flops: float | None = None
    max_latency: float | None = None
    max_model_bytes: float | None = None  # the deployed weights' bytes at deploy_dtype: a params budget
    max_memory: float | None = None  # peak activation bytes of one inference at batch 1, at deploy_dtype
    deploy_dtype: str = "float32"  # what --max-model-bytes and --max-memory count in (float32, ..., int8)
    latency_table: str | None = None  # DARTS: a per-op table from `dcanas profile --ops`
    latency_device: str | None = None  # NB201: a device of the benchmark's latency tables (pixel3, raspi4, ...)
    bench_table: str | None = None  # NB201: the benchmark table (default: $DCANAS_NB201_TABLE or ../shared/data)
    constraint: str = "derived"  # or "paper" (DCA-NAS eq. 3, meant to be used with a look-up graph)
    search_budgets: dict[str, float] = field(default_factory=dict)  # K_d' per metric, from a LUG
    repair: bool = True
    # the deployed evaluation network (None = the dataset's published setting)
    eval_cells: int | None = None
    eval_channels: int | str | None = None  # an int, or "auto"
    eval_auxiliary: bool = True
    # the supernet and its savings
    cells: int = 8
    channels: int = 16
    bottleneck: int = 4
    weight_sharing: bool = True
    derived_cells: bool = True
    max_skips: int | None = None  # DARTS: cap on skip connections in the derived normal cell (P-DARTS)
    reduce_cell: str | None = None  # DARTS: a named genotype whose reduction cell is fixed, not searched (GDAS)
    remedy: str = DEFAULT_REMEDY  # against collapse onto parameter-free ops: see remedies.py
    beta_weight: float = DEFAULT_BETA_WEIGHT  # beta-decay: final weight of the regulariser (linear ramp from 0)
    alpha_noise: float = 0.0  # SDARTS-RS: final bound of uniform noise on the mixing weights in weight steps; 0 = off
    # search-time cuts for quick searches (the budgets stay about the deployed network at full resolution)
    train_subset: int | None = None  # search on this many training images (class-balanced), split in two halves
    search_image_size: int | None = None  # the supernet sees images resized to this (None: as loaded)
    search_stem: str | None = None  # DARTS: "cifar" or "imagenet" (stride 8 before the cells); None: as deployed
    score_derived: bool = False  # after the search, the derived network's one-shot accuracy on the alpha half
    derive_by: str = "alphas"  # or "perturbation": each op's and edge's accuracy drop in the supernet (selection.py)
    derive_images: int = DERIVE_IMAGES  # held-out images the perturbation scores are measured on
    # optimisation (paper appendix defaults, batch scaled for a CPU)
    epochs: int = 50
    batch_size: int = 64  # the global batch, over all processes
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_lr: float = 6e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    lambda_lr: float = 0.05
    partial_channels: int = 1  # NB201: PC-DARTS's partial channel connections, 1/K of the channels (1 = off)
    edge_norm: bool = False  # NB201: PC-DARTS's edge normalisation
    penalty_step: str = "sgd"  # the constraint's gradient: inside the Adam step ("adam") or a plain step ("sgd")
    penalty_lr: float = 1.0  # step size of the "sgd" penalty step (digits 200K: 0.1 ended 32 % over, 1.0 at 97 %)
    fill_budget: bool | None = None  # upgrade ops into unused budget after the search (None: the space's default)
    rerank: str | None = None  # a zero-cost proxy choosing among the landing's top candidates; "none"; None: space's
    rerank_top: int = 500  # how many of the alphas' best landings --rerank ranks (each costs one proxy evaluation)
    budget_floor: float | None = None  # aim for floor <= k/K <= 1 (a second multiplier below); None: at most K
    budget_scope: str = "all"  # "parametric": the budget moves alpha towards cheaper convolutions only; "landing":
    # the search runs without it and the space lands its alphas in the budget (constraint.py)
    warmup_epochs: float = 0.0  # weights-only epochs first (PC-DARTS uses 15 of 50); fractions allowed
    grad_clip: float = 5.0
    seed: int = 0
    max_steps: int | None = None
    accum_steps: int = 1  # micro-batches per process per step (BatchNorm normalises over one)
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    threads: int | None = None  # torch CPU threads; None = chosen at start (threads.py), then recorded here

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        """Inverse of to_dict (unknown keys ignored, tuples restored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "arch_betas" in values:
            values["arch_betas"] = tuple(values["arch_betas"])
        if "search_stem" not in values and "seed" in values:  # saved before the ImageNet supernet stem existed
            values["search_stem"] = "cifar"
        if "remedy" not in values and "seed" in values:  # a run saved before these options: as it ran then
            values.update(remedy="none", penalty_step="adam", fill_budget=False)
        if "rerank" not in values and "seed" in values:  # saved before --rerank: landed by the alphas alone
            values["rerank"] = "none"
        return cls(**values)

    def validate(self) -> None:
        """Refuse option values that cannot work (one line each), before anything is loaded or written."""
        if self.space not in SPACES.names():
            raise ConfigError(f"--space must be one of {', '.join(SPACES.names())}, not {self.space!r}")
        check_remedy(self.remedy)
        if self.budget_scope == "landing" and not SPACES.get(self.space).can_rerank:
            raise ConfigError(f"--budget-scope landing lands the search in the budget by listing every architecture "
                              f"inside it, which the {self.space} space cannot; use --budget-scope all or parametric")
        if self.budget_scope == "landing" and self.max_skips is not None:
            raise ConfigError("--max-skips caps the alphas' own derivation, and --budget-scope landing lands a listed "
                              "genotype without that cap; give one of them")
        if self.rerank not in (None, "none"):
            proxy_names(self.rerank)  # an unknown name: one line listing the known ones
            if not SPACES.get(self.space).can_rerank:
                raise ConfigError(f"--rerank chooses among the alphas' top architectures in the budget, which the "
                                  f"{self.space} space cannot list; use --rerank none")
            if self.max_skips is not None:  # the listed candidates are not capped: the cap would be ignored
                raise ConfigError("--max-skips caps the alphas' own derivation, and --rerank chooses among listed "
                                  "genotypes without that cap; give one of them (or --rerank none)")
        if self.derive_by == "perturbation" and SPACES.get(self.space).chooses_inputs and (
                self.budget_scope == "landing" or self.rerank_proxy() is not None):
            raise ConfigError(f"--derive-by perturbation chooses each node's inputs by what removing them costs, "
                              f"which the {self.space} landing's list (--rerank, --budget-scope landing, dcanas land) "
                              f"does not see; use --rerank none without --budget-scope landing, or --derive-by alphas")
        if self.reduce_cell is not None:
            if self.space != "darts":
                raise ConfigError(f"--reduce-cell fixes the darts space's reduction cell; the {self.space} space has "
                                  f"one cell type: drop --reduce-cell")
            if self.derive_by == "perturbation":
                raise ConfigError("--derive-by perturbation scores the reduction cell's ops in the supernet, and "
                                  "--reduce-cell runs that cell fixed; give one of them")
            from .spaces.darts.supernet import fixed_reduce_cell

            fixed_reduce_cell(self.reduce_cell)  # an unknown name or an unpinnable cell: one line
        bottleneck_ok = int_in(self.bottleneck, 1) and int_in(self.channels, 2, MAX_CHANNELS) and \
            self.channels % self.bottleneck == 0 and (self.channels // self.bottleneck) % 2 == 0
        raise_first([
            (int_in(self.epochs, 1), f"--epochs must be an integer >= 1, got {self.epochs}"),
            (int_in(self.batch_size, 1), f"--batch-size must be an integer >= 1, got {self.batch_size}"),
            rate_check("--lr", self.lr),
            rate_check("--arch-lr", self.arch_lr),
            rate_check("--lambda-lr", self.lambda_lr, allow_zero=True),
            rate_check("--penalty-lr", self.penalty_lr),
            rate_check("weight decay", self.weight_decay, allow_zero=True),
            rate_check("alpha weight decay", self.arch_weight_decay, allow_zero=True),
            rate_check("gradient clip", self.grad_clip),
            (positive(self.momentum, allow_zero=True) and self.momentum < 1, f"momentum must be in [0, 1), got "
                                                                             f"{self.momentum}"),
            (all(positive(b, allow_zero=True) and b < 1 for b in self.arch_betas),
             f"alpha Adam betas must be in [0, 1), got {self.arch_betas}"),
            (self.max_steps is None or int_in(self.max_steps, 1), f"--max-steps must be at least 1, got "
                                                                  f"{self.max_steps}"),
            (int_in(self.accum_steps, 1), f"--accum-steps must be at least 1, got {self.accum_steps}"),
            (int_in(self.seed, 0), f"--seed must be a non-negative integer, got {self.seed}"),
            (self.threads is None or int_in(self.threads, 1), f"--threads must be a positive integer, got {self.threads}"),
            (int_in(self.cells, 3, MAX_CELLS), f"--search-cells must be in 3..{MAX_CELLS} (the supernet needs two "
                                               f"reduction cells and a normal one), got {self.cells}"),
            (int_in(self.channels, 2, MAX_CHANNELS) and self.channels % 2 == 0,
             f"--search-channels must be even and in 2..{MAX_CHANNELS}, got {self.channels}"),
            (bottleneck_ok, f"--bottleneck must divide --search-channels {self.channels} into an even count >= 2 "
                            f"(e.g. 2 or 4), got {self.bottleneck}"),
            (self.eval_cells is None or int_in(self.eval_cells, 1, MAX_CELLS),
             f"--cells must be in 1..{MAX_CELLS}, got {self.eval_cells}"),
            (self.eval_channels in (None, "auto") or int_in(self.eval_channels, 2, MAX_CHANNELS),
             f"--channels must be 'auto' or in 2..{MAX_CHANNELS}, got {self.eval_channels}"),
            (self.image_size is None or int_in(self.image_size, 4, MAX_IMAGE_SIZE),
             f"--image-size must be in 4..{MAX_IMAGE_SIZE} pixels, got {self.image_size}"),
            (all(v is None or positive(v) for v in (self.max_params, self.max_flops, self.max_latency,
                                                    self.max_model_bytes, self.max_memory)),
             "budgets (--max-params, --max-flops, --max-latency, --max-model-bytes, --max-memory) must be finite "
             "numbers > 0"),
            (self.max_memory is None or self.space == "darts",
             f"--max-memory (peak activation memory) is implemented for --space darts, not {self.space}"),
            (self.max_memory is None or self.budget_scope != "parametric",
             "--budget-scope parametric applies to additive budgets; drop it with --max-memory (a peak)"),
            (self.deploy_dtype in DTYPE_BYTES,
             f"--deploy-dtype must be one of {', '.join(DTYPE_BYTES)}, not {self.deploy_dtype!r}"),
            (self.constraint in ("derived", "paper"), f"--constraint must be derived or paper, not "
                                                      f"{self.constraint!r}"),
            (int_in(self.partial_channels, 1), f"--partial-channels must be an integer >= 1, got "
                                               f"{self.partial_channels}"),
            (self.max_skips is None or (self.space == "darts" and int_in(self.max_skips, 0)),
             f"--max-skips is a non-negative cap for the darts space (got {self.max_skips} with --space "
             f"{self.space})"),
            ((self.partial_channels == 1 and not self.edge_norm) or self.space == "nb201",
             "--partial-channels and --edge-norm (PC-DARTS) are implemented for --space nb201 only"),
            (self.penalty_step in ("adam", "sgd"), f"--penalty-step must be adam or sgd, got {self.penalty_step!r}"),
            (self.budget_scope in BUDGET_SCOPES,
             f"--budget-scope must be one of {', '.join(BUDGET_SCOPES)}, got {self.budget_scope!r}"),
            (self.budget_scope != "parametric" or self.constraint == "derived",
             "--budget-scope parametric works with --constraint derived (the paper's estimate keeps every edge)"),
            (self.budget_floor is None or (positive(self.budget_floor) and self.budget_floor < 1),
             f"--budget-floor is a fraction of the budget in (0, 1), got {self.budget_floor}"),
            (positive(self.beta_weight, allow_zero=True), f"--beta-weight must be a finite number >= 0, got "
                                                          f"{self.beta_weight}"),
            (positive(self.alpha_noise, allow_zero=True) and self.alpha_noise < 1,
             f"--alpha-noise must be in [0, 1) (a bound on noise added to mixing weights), got {self.alpha_noise}"),
            (self.train_subset is None or int_in(self.train_subset, 2),
             f"--train-subset must be at least 2 images (one per half), got {self.train_subset}"),
            (self.search_image_size is None or int_in(self.search_image_size, 4, MAX_IMAGE_SIZE),
             f"--search-image-size must be between 4 and {MAX_IMAGE_SIZE} pixels, got {self.search_image_size}"),
            (self.search_stem in (None, "cifar", "imagenet"),
             f"--search-stem must be cifar or imagenet, not {self.search_stem!r}"),
            (self.search_stem != "imagenet" or self.search_image_size is None or self.search_image_size >= 32,
             f"--search-stem imagenet divides the input by 8 before the cells: --search-image-size "
             f"{self.search_image_size} leaves too little (use 32 or more)"),
            (int_in(self.rerank_top, 1), f"--rerank-top must be an integer >= 1, got {self.rerank_top}"),
            (self.derive_by in DERIVATIONS,
             f"--derive-by must be one of {', '.join(DERIVATIONS)}, not {self.derive_by!r}"),
            (int_in(self.derive_images, 1), f"--derive-images must be an integer >= 1, got {self.derive_images}"),
            (positive(self.warmup_epochs, allow_zero=True) and self.warmup_epochs < self.epochs,
             f"--warmup-epochs must be in [0, --epochs={self.epochs}), got {self.warmup_epochs}"),
        ])
        check_device(self.device)

    def with_rerank_pinned(self) -> "SearchConfig":
        """This config with the space's default --rerank written out, so that a run folder resumes and lands
        with the rule it started with after the default changes."""
        return self if self.rerank is not None else replace(self, rerank=self.rerank_proxy() or "none")

    def rerank_proxy(self) -> str | None:
        """The proxy the landing chooses by (None: the alphas alone), with the space's default resolved."""
        name = SPACES.get(self.space).reranks_by_default if self.rerank is None else self.rerank
        return None if name == "none" else name

    def memory_dtype(self) -> str | None:
        """The dtype peak memory is counted in, when a device or search budget is on it (cost tables build
        memory only then: it costs a trace per op shape)."""
        return self.deploy_dtype if self.max_memory is not None or "memory" in self.search_budgets else None

    def budgets(self) -> list[Budget]:
        """The device budgets asked for."""
        budgets = [Budget(m, float(v)) for m, v in (("params", self.max_params), ("flops", self.max_flops),
                                                     ("latency", self.max_latency)) if v is not None]
        if self.max_memory is not None:
            budgets.append(Budget("memory", float(self.max_memory),
                                  f"--max-memory {readable(self.max_memory)} ({self.deploy_dtype})"))
        if self.max_model_bytes is not None:  # model bytes = params x bytes per value, exactly (memory.py)
            limit = float(self.max_model_bytes // DTYPE_BYTES[self.deploy_dtype])
            if self.max_params is None or limit < self.max_params:
                asked = (f"--max-model-bytes {readable(self.max_model_bytes)} ({self.deploy_dtype}: "
                         f"{readable(limit)} parameters)")
                budgets = [Budget("params", limit, asked)] + [b for b in budgets if b.metric != "params"]
        return budgets


BUDGET_FIELDS = ("max_params", "max_flops", "max_latency", "max_model_bytes", "max_memory")
PAPER_IMAGENET_BATCH = 1024


def imagenet_search_preset(batch_size: int = PAPER_IMAGENET_BATCH) -> dict[str, Any]:
    """The paper's ImageNet search settings (appendix: batch 1024, lr 0.5, alpha lr 6e-3, 50 epochs, 8 cells x 16
    channels, three stride-2 convolutions taking 224 px to 28) at `batch_size`: SGD's rate scaled linearly with
    the batch (Goyal et al. 2017), Adam's alpha rate by its square root (the rule for adaptive steps, Malladi et
    al. 2022); the deployed network is the paper's 14 cells x 48 channels."""
    scale = batch_size / PAPER_IMAGENET_BATCH
    return {"search_stem": "imagenet", "batch_size": batch_size, "lr": 0.5 * scale, "arch_lr": 6e-3 * scale ** 0.5,
            "epochs": 50, "cells": 8, "channels": 16, "eval_cells": 14, "eval_channels": 48}


SEARCH_PRESETS = {"imagenet": imagenet_search_preset}


def check_benchmark_options(space: str, latency_device: str | None, bench_table: str | None) -> None:
    """Refuse NAS-Bench-201-only options on a space without a benchmark, and a --bench-table that is not there (for
    new runs and landings: a resumed run keeps what it started with)."""
    typed = [flag for flag, value in (("--latency-device", latency_device), ("--bench-table", bench_table)) if value]
    if typed and not SPACES.get(space).has_benchmark:
        raise ConfigError(f"{' and '.join(typed)} {'read' if len(typed) > 1 else 'reads'} NAS-Bench-201's table "
                          f"(--space nb201); the {space} space measures latency with --latency-table FILE "
                          "(`dcanas profile --ops`)")
    if bench_table and not Path(bench_table).expanduser().is_file():
        raise ConfigError(f"--bench-table {bench_table}: no such file")


def make_search_config(dataset: str = SearchConfig.dataset, *, unconstrained: bool = False,
                       base: dict[str, Any] | None = None, preset: str | None = None, **given: Any) -> SearchConfig:
    """SearchConfig from the defaults, the dataset's preset and default budget (or a saved config, `base`),
    a named `preset` (SEARCH_PRESETS, scaled to the given batch size), then `given` (None = not given)."""
    if preset is not None and preset not in SEARCH_PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(SEARCH_PRESETS)}, not {preset!r}")
    values = SearchConfig(dataset=dataset).to_dict()
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise ConfigError(f"unknown search option(s): {', '.join(unknown)}")
    given = {k: v for k, v in given.items() if v is not None}
    typed_budgets = [f"--{k.replace('_', '-')}" for k in BUDGET_FIELDS if k in given]
    if unconstrained and typed_budgets:
        raise ConfigError(f"--unconstrained searches without any budget; drop it or {', '.join(typed_budgets)}")
    if base is not None:  # a saved config.json: everything as it was, then what was typed
        values.update({**base, "dataset": dataset})  # the caller resolved --dataset over the file's
        if given.get("space", values["space"]) != values["space"] and "rerank" not in given:
            values["rerank"] = None  # a saved run pins its space's landing rule; another space takes its own
    else:
        values.update(dataset_info(dataset).search_preset)
        if not unconstrained and not any(k in given for k in BUDGET_FIELDS):
            values.update(dataset_info(dataset).default_budget)
    if preset is not None:
        values.update(SEARCH_PRESETS[preset](**({"batch_size": given["batch_size"]} if "batch_size" in given else {})))
    values.update(given)
    if unconstrained:
        values.update(dict.fromkeys(BUDGET_FIELDS))
    config = SearchConfig.from_dict(values)
    if config.space in SPACES.names():  # an unknown space is refused, with the list, by validate()
        check_benchmark_options(config.space, config.latency_device, config.bench_table)
    if config.bench_table:  # recorded absolute: a resume or landing from another folder finds it
        config.bench_table = str(Path(config.bench_table).expanduser().resolve())
    return config
