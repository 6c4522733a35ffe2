"""Evaluation-phase training: a genotype's deployed network trained from scratch, in one process or under torchrun.

Defaults are the paper's evaluation recipe (appendix D, as in DARTS): SGD 0.025 -> 0 cosine, momentum
0.9, weight decay 3e-4, gradient clipping 5, cutout 16, drop-path 0.2 ramped linearly over the epochs,
auxiliary head weight 0.4, batch 96, 600 epochs; imagenet-style networks get the ImageNet recipe.

Determinism. Data order and augmentation are functions of (seed, epoch, batch) (`BatchLoader`; for a
streamed set, of (seed, epoch, image): `data/stream.py`); the only other randomness, drop-path, is
reseeded before every micro-batch from (seed, epoch, step, micro-batch index over all processes). Hence a
resumed run repeats an uninterrupted one bit for bit, and a run's updates depend on the global batch and its
micro-batch size (batch_size / (world_size x accum_steps), which is also what BatchNorm normalises over) — not
on how many processes share the work: 2 processes x 1 micro-batch == 1 process x 2 micro-batches.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as dist_utils
from .cost import FLOPS_CONVENTION
from .spaces.darts.cost import measure_network
from .data import (BatchPlan, ImageDataset, balanced_indices, dataset_info, default_augment, load_dataset,
                   split_indices)
from .data.stream import EVAL_CROP_FRACTION, StreamedDataset, make_loader
from .data.loader import stateless_generator
from .errors import ConfigError, RunDirError
from .model_io import MODEL_FILE, save_model
from .checks import (MAX_CELLS, MAX_CHANNELS, MAX_IMAGE_SIZE, check_device, int_in, positive, raise_first,
                     rate_check)
from .run_loop import Run
from .runs import (CHECKPOINT, atomic_write_text, load_checkpoint, prepare_run_dir, record_run_info,
                   refuse_resume_after_max_steps, write_json)
from .spaces.darts.genotype import GENOTYPES, Genotype, genotype_to_text, load_genotype, parse_genotype
from .spaces.darts.network import EvalNetwork, EvalSetting, eval_setting_for, setting_for_named_dataset
from .threads import choose_threads, use_threads
from .units import amount, readable

BEST_FILE = "best.pt"
SELECT_CHOICES = ("last", "val", "test")
_DROP_PATH_STREAM = 2  # stateless stream id, distinct from the loader's permutation (0) and augmentation (1)
_STOP_CHECK_EVERY = 10  # steps between the (collective) stop-request checks of a multi-process run


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved into the run folder and restored by --resume."""

    genotype: str = "DARTS_V2"  # a registered name, a genotype file, a search run folder, or DARTS text
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    data_mode: str = "auto"  # "memory", "stream" (decode batches in workers), or "auto" (stream when too big)
    strict_images: bool = False  # a streamed set: refuse an unreadable image instead of skipping it
    data_workers: int | None = None  # a streamed set: decoding processes (None: one per spare core, at most 8)
    # the network (None: the search run's recorded setting, else the dataset's published one)
    cells: int | None = None
    channels: int | None = None
    style: str | None = None
    auxiliary: bool = True
    # the recipe: paper appendix D (CIFAR); IMAGENET_RECIPE and the dataset's train_preset replace some values
    epochs: int = 600
    batch_size: int = 96  # the global batch, over all processes
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    cutout: int = 16
    drop_path: float = 0.2
    aux_weight: float = 0.4
    # model selection: hold out part of train and keep the epoch best on it, or keep the last epoch
    val_fraction: float = 0.0
    train_subset: int | None = None  # train on this many training images, class-balanced (quick studies)
    select: str | None = None  # 'last', 'val' or 'test' (DARTS' practice); None: 'val' if val_fraction else 'last'
    eval_every: int = 1  # evaluate val/test every this many epochs (and always after the last one)
    # execution (may change on --resume: they do not change what is computed, only where and how)
    accum_steps: int = 1
    eval_batch_size: int = 500
    seed: int = 0
    max_steps: int | None = None
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    # NHWC: faster on CUDA and, through oneDNN, on CPU too (1.3-1.5x a step, BENCHMARKS.md section 16); None = on
    channels_last: bool | None = True
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    threads: int | None = None  # torch CPU threads; None = chosen at start (threads.py), then recorded here

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of to_dict (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def selection(self) -> str:
        """The selection rule actually used."""
        return self.select or ("val" if self.val_fraction > 0 else "last")


# Fields that may differ between a run and its --resume without changing the computation.
EXECUTION_FIELDS = ("accum_steps", "eval_batch_size", "max_steps", "device", "channels_last", "data_workers")

# The ImageNet evaluation recipe (paper appendix D: 250 epochs, batch 1024, lr 0.5, weight decay 3e-5,
# label smoothing 0.1, auxiliary head). Warm-up and no cutout/drop-path follow PC-DARTS' ImageNet code.
IMAGENET_RECIPE: dict[str, Any] = {"epochs": 250, "batch_size": 1024, "lr": 0.5, "weight_decay": 3e-5,
                                   "label_smoothing": 0.1, "warmup_epochs": 5, "cutout": 0, "drop_path": 0.0}

# -- where the genotype comes from ---------------------------------------------------------------------------

@dataclass
class GenotypeSource:
    """The genotype to train and, when it comes from a search run folder, what that search recorded."""

    genotype: Genotype
    name: str
    run_dir: Path | None = None
    setting: EvalSetting | None = None  # the deployed network the search budgeted
    budgets: dict[str, dict] = field(default_factory=dict)  # {metric: {limit, value, ok}}
    dataset: str | None = None
    data_dir: str | None = None


def refuse_other_space(spec: str) -> None:
    """Training and export are for the DARTS space: say so for a search run folder of another space."""
    config_file = Path(str(spec)).expanduser() / "config.json"
    try:
        space = json.loads(config_file.read_text()).get("space", "darts") if config_file.is_file() else "darts"
    except (OSError, ValueError, AttributeError):
        return  # not ours to judge here; loading the genotype reports a damaged folder
    if space != "darts":
        raise ConfigError(f"{spec} holds a --space {space} search; dcanas train and export build DARTS-space "
                          f"networks only (a NAS-Bench-201 architecture's trained accuracy is a table look-up: "
                          f"see its report.md)")


def load_source(spec: str) -> GenotypeSource:
    """Resolve GENOTYPE|FILE|RUN_DIR; a search run folder also yields its setting, budgets and dataset."""
    refuse_other_space(spec)
    genotype = load_genotype(spec)
    text = str(spec)
    if text in GENOTYPES:
        return GenotypeSource(genotype, text)
    if text.lstrip().startswith(("Genotype(", "{")):  # literal text (and no path: it may be too long for one)
        return GenotypeSource(genotype, "genotype")
    path = Path(text).expanduser()
    if path.is_file():
        return GenotypeSource(genotype, path.stem)
    source = GenotypeSource(genotype, path.resolve().name, run_dir=path)
    result_file = path / "result.json"
    if result_file.is_file():
        try:
            result = json.loads(result_file.read_text())
            if result.get("setting"):
                source.setting = EvalSetting(**result["setting"])
            source.budgets = {m: dict(b) for m, b in (result.get("budgets") or {}).items()}
            search_config = result.get("config") or {}
        except (ValueError, TypeError, AttributeError) as exc:
            raise RunDirError(f"{result_file} is corrupt ({exc}); train its genotype.json instead") from None
        source.dataset = search_config.get("dataset")
        source.data_dir = search_config.get("data_dir")
    return source


def source_setting(source: GenotypeSource | None, dataset: str | None = None, **overrides: Any) -> EvalSetting:
    """The network a genotype is counted, built or exported in: a search (or landing) run folder's recorded one unless
    `dataset` names another, else `dataset`'s preset (default cifar10); `overrides` (None = not given) on top."""
    if source is not None and source.setting is not None and dataset in (None, source.dataset):
        return source.setting.replace(**{k: v for k, v in overrides.items() if v is not None})
    return setting_for_named_dataset(dataset or "cifar10", **overrides)


def make_config(genotype: str, **given: Any) -> TrainConfig:
    """TrainConfig from: the paper recipe, the ImageNet recipe for imagenet-style networks, the dataset's
    preset, then `given` (None = not given). A search run folder supplies the dataset and network style."""
    source = load_source(genotype)
    given = {k: v for k, v in given.items() if v is not None}
    dataset = given.get("dataset") or source.dataset or TrainConfig.dataset
    if "data_dir" not in given and source.data_dir and dataset == source.dataset:
        given["data_dir"] = source.data_dir
    style = given.get("style") or (source.setting.style if source.setting else None)
    if style is None:
        style = eval_setting_for(dataset, image_size=given.get("image_size")).style
    values = TrainConfig(genotype=str(genotype), dataset=dataset).to_dict()
    if style == "imagenet":
        values.update(IMAGENET_RECIPE)
    values.update(dataset_info(dataset).train_preset)
    values.update(given)
    if style == "imagenet" and "warmup_epochs" not in given:
        # the recipe warms up over 5 of its 250 epochs: a shorter run keeps that share (a 3-epoch check: none)
        recipe = IMAGENET_RECIPE
        values["warmup_epochs"] = min(recipe["warmup_epochs"],
                                      values["epochs"] * recipe["warmup_epochs"] // recipe["epochs"])
    return TrainConfig.from_dict(values)


def resolve_setting(config: TrainConfig, data: ImageDataset | StreamedDataset,
                    recorded: EvalSetting | None) -> EvalSetting:
    """The network to train: the search's recorded setting (or the dataset's published one) with overrides."""
    overrides = {k: v for k, v in (("cells", config.cells), ("channels", config.channels), ("style", config.style),
                                   ("image_size", config.image_size)) if v is not None}
    auxiliary = config.auxiliary and config.aux_weight > 0
    if recorded is not None:
        setting = recorded.replace(**overrides, auxiliary=auxiliary)
    else:
        setting = eval_setting_for(config.dataset, **{"num_classes": data.num_classes, "in_channels": data.in_channels,
                                                      "image_size": data.image_size, "auxiliary": auxiliary,
                                                      **overrides})
    have = {"in_channels": data.in_channels, "num_classes": data.num_classes, "image_size": data.image_size}
    wrong = [f"{k.replace('_', ' ')} {getattr(setting, k)} (data: {v})" for k, v in have.items()
             if getattr(setting, k) != v]
    if wrong:
        raise ConfigError(f"the network does not fit {config.dataset}: {', '.join(wrong)}; train on the dataset "
                          f"the genotype was searched on, or pass --image-size")
    return setting


def validate_config(config: TrainConfig, world_size: int | None = None, train_size: int | None = None) -> None:
    """Refuse option values that cannot work, before anything is written (without the sizes: the options alone)."""
    raise_first([
        (int_in(config.epochs, 1), f"--epochs must be an integer >= 1, got {config.epochs}"),
        (int_in(config.accum_steps, 1), f"--accum-steps must be an integer >= 1, got {config.accum_steps}"),
        (int_in(config.batch_size, 1), f"--batch-size must be an integer >= 1, got {config.batch_size}"),
        rate_check("--lr", config.lr),
        rate_check("--weight-decay", config.weight_decay, allow_zero=True),
        rate_check("--grad-clip", config.grad_clip),
        rate_check("--aux-weight", config.aux_weight, allow_zero=True),
        (positive(config.momentum, allow_zero=True) and config.momentum < 1,
         f"--momentum must be in [0, 1), got {config.momentum}"),
        (config.max_steps is None or int_in(config.max_steps, 1), f"--max-steps must be at least 1, got "
                                                                  f"{config.max_steps}"),
        (int_in(config.seed, 0), f"--seed must be a non-negative integer, got {config.seed}"),
        (int_in(config.cutout, 0), f"--cutout must be a non-negative integer, got {config.cutout}"),
        (config.channels is None or int_in(config.channels, 2, MAX_CHANNELS),
         f"--channels must be in 2..{MAX_CHANNELS}, got {config.channels}"),
        (config.cells is None or int_in(config.cells, 1, MAX_CELLS), f"--cells must be in 1..{MAX_CELLS}, got "
                                                                     f"{config.cells}"),
        (config.image_size is None or int_in(config.image_size, 4, MAX_IMAGE_SIZE),
         f"--image-size must be in 4..{MAX_IMAGE_SIZE} pixels, got {config.image_size}"),
        (config.train_subset is None or int_in(config.train_subset, 1), f"--train-subset must be at least 1, got "
                                                                        f"{config.train_subset}"),
    ])
    check_device(config.device)
    if world_size is None or train_size is None:
        return
    checks = [
        (0.0 <= config.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {config.val_fraction}"),
        (config.batch_size > 0 and config.batch_size % (world_size * max(config.accum_steps, 1)) == 0,
         (f"--batch-size {config.batch_size} (the global batch) must be a positive multiple of processes x "
          f"--accum-steps = {world_size} x {config.accum_steps}")),
        (config.batch_size <= train_size,
         f"--batch-size {config.batch_size} exceeds the {train_size} training images"),
        (0.0 <= config.drop_path < 1.0, f"--drop-path must be in [0, 1), got {config.drop_path}"),
        (0.0 <= config.label_smoothing < 1.0, f"--label-smoothing must be in [0, 1), got {config.label_smoothing}"),
        (0 <= config.warmup_epochs < config.epochs or config.warmup_epochs == 0,
         f"--warmup-epochs {config.warmup_epochs} must be below --epochs {config.epochs}"),
        (config.selection in SELECT_CHOICES, f"--select must be one of {', '.join(SELECT_CHOICES)}"),
        (config.selection != "val" or config.val_fraction > 0, "--select val needs --val-fraction above 0"),
        (config.eval_batch_size >= 1, "--eval-batch-size must be at least 1"),
        (config.eval_every >= 1, f"--eval-every must be at least 1 epoch, got {config.eval_every}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# -- the pieces of the loop ----------------------------------------------------------------------------------

class _TrainingForward(nn.Module):
    """Main and auxiliary logits through `forward`, the one method DistributedDataParallel intercepts."""

    def __init__(self, net: EvalNetwork):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.net.forward_with_aux(x)


def lr_factor(epoch: int, epochs: int, warmup: int) -> float:
    """Linear warm-up over `warmup` epochs, then cosine to 0 at `epochs` (exactly CosineAnnealingLR without warm-up)."""
    if epoch < warmup:
        return (epoch + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


def has_unused_inputs(genotype: Genotype) -> bool:
    """Whether some cell node feeds nothing (its weights get no gradient, which DDP must be told about)."""
    for edges, concat in ((genotype.normal, genotype.normal_concat), (genotype.reduce, genotype.reduce_concat)):
        used = set(concat) | {i for _, i in edges}
        if any(node not in used for node in range(2 + len(edges) // 2)):
            return True
    return False


def average_bn_statistics(net: nn.Module) -> None:
    """Average BatchNorm running statistics over processes (each saw only its shard), so every process
    evaluates, and rank 0 saves, statistics of all the data."""
    if dist_utils.world_size() == 1:
        return
    for buffer in net.buffers():
        if buffer.is_floating_point():  # not num_batches_tracked, which is the same everywhere
            buffer.copy_(dist_utils.all_reduce_mean(buffer))


def _micro_batch_seed(seed: int, epoch: int, step: int, micro_batch: int) -> int:
    return stateless_generator(seed, epoch, step, micro_batch, _DROP_PATH_STREAM).initial_seed()


@torch.no_grad()
def evaluate(net: EvalNetwork, loader: BatchPlan, *, amp: bool = False,
             channels_last: bool = False) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `net` over all of `loader`, summed over every process's shard."""
    was_training = net.training
    net.eval()
    device = loader.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, seen
    for x, y in loader.epoch(0):
        if len(y) == 0:  # a short last batch may leave some process nothing
            continue
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            logits = net(x)
        sums += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum").double(),
                             (logits.argmax(1) == y).sum().double(), torch.tensor(len(y), device=device).double()])
    net.train(was_training)
    loss, correct, seen = dist_utils.all_reduce_sum(sums).tolist()
    return loss / max(seen, 1), correct / max(seen, 1)


def eval_loader(data: ImageDataset | StreamedDataset, split: str, indices: torch.Tensor | None, batch_size: int,
                device: torch.device, rank: int, world_size: int, **streamed: Any) -> BatchPlan:
    """Unshuffled, unaugmented batches of `split`'s images `indices` (None: all), each process taking its rows."""
    batch_size = -(-batch_size // world_size) * world_size  # a multiple of the world size, as BatchPlan needs
    return make_loader(data, split, indices, batch_size, augment=None, seed=0, shuffle=False, device=device,
                       rank=rank, world_size=world_size, **streamed)


# -- the run -------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What a training run hands back (and prints with --json)."""

    run_dir: Path
    genotype: Genotype
    setting: EvalSetting
    test_acc: float
    test_loss: float
    val_acc: float | None
    selected_epoch: int
    selection: str
    params: int
    params_with_aux: int
    flops: int
    budgets: dict[str, dict]
    source: str | None
    epochs: int
    steps: int
    seconds: float
    world_size: int
    stopped_early: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"test_acc": self.test_acc, "test_loss": self.test_loss, "val_acc": self.val_acc,
                "selected_epoch": self.selected_epoch, "selection": self.selection, "params": self.params,
                "params_with_aux": self.params_with_aux, "flops": self.flops, "flops_convention": FLOPS_CONVENTION,
                "budgets": self.budgets, "budgets_ok": all(b["ok"] for b in self.budgets.values()),
                "genotype": genotype_to_text(self.genotype), "setting": self.setting.to_dict(),
                "source": self.source, "run_dir": str(self.run_dir), "model": str(self.run_dir / MODEL_FILE),
                "epochs": self.epochs, "steps": self.steps, "train_seconds": round(self.seconds, 2),
                "world_size": self.world_size, "stopped_early": self.stopped_early}


def refuse_budget_breaking_overrides(source: GenotypeSource, setting: EvalSetting, net: EvalNetwork) -> None:
    """Options that change a searched network (--channels, --cells, ...) and so break its budget are refused before
    any training, not reported as EXCEEDED after it."""
    if not source.budgets or source.setting is None or setting == source.setting:
        return
    flags = {"num_classes": "--classes", "auxiliary": "--no-auxiliary"}  # the options' own spelling
    changed = [flags.get(k, f"--{k.replace('_', '-')}") + ("" if isinstance(v, bool) else f" {v}")
               for k, v in setting.to_dict().items() if v != getattr(source.setting, k)]
    for metric, b in recheck_budgets(source.budgets, net).items():
        searched_within = b["searched_value"] is not None and b["searched_value"] <= b["limit"]
        if b["recounted"] and searched_within and not b["ok"]:  # the options broke it, not the search
            raise ConfigError(f"with {', '.join(changed)} the network's {metric} is {amount(metric, b['value'])}, over "
                              f"the {amount(metric, b['limit'])} {source.run_dir} was searched for; drop the option, "
                              f"or train {Path(source.run_dir or '.') / 'genotype.json'} to leave the budget behind")


def recheck_budgets(recorded: dict[str, dict], net: EvalNetwork) -> dict[str, dict]:
    """Each budget a search recorded, re-checked on the trained network (params and FLOPs recounted)."""
    cost = measure_network(net).to_dict()
    out = {}
    for metric, b in recorded.items():
        recount = metric in cost
        value = cost[metric] if recount else b.get("value")
        ok = bool(value is not None and value <= b["limit"])
        out[metric] = {"limit": b["limit"], "value": value, "ok": ok, "searched_value": b.get("value"),
                       "recounted": recount}
    return out


def run_training(config: TrainConfig | None, run_dir: str | Path | None = None, *, resume: bool = False,
                 resume_overrides: dict[str, Any] | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> TrainResult:
    """Train `config.genotype` from scratch (or continue the run in `run_dir`); torchrun-aware and resumable."""
    checkpoint = None
    if resume:
        # every process reads the checkpoint: resuming on several nodes needs the run folder on shared storage
        checkpoint = _load_resume(run_dir)
        config = TrainConfig.from_dict({**checkpoint["config"], **(resume_overrides or {})})
        run_dir = Path(run_dir)
        refuse_resume_after_max_steps(checkpoint, config.max_steps, run_dir,
                                      "to train longer, train again in a new run folder")
        if dist_utils.is_launch_rank_0():
            record_run_info(run_dir, resumed=True)
    if config is None:
        raise ConfigError("give a genotype to train, or --resume RUN_DIR")
    validate_config(config)
    rank, world_size, device = dist_utils.init_distributed(config.device)
    threads_before = torch.get_num_threads()
    try:
        return _train(config, run_dir, checkpoint, rank, world_size, device, progress and rank == 0,
                      log if rank == 0 else (lambda message: None))
    finally:
        use_threads(threads_before)
        dist_utils.cleanup()


class TrainStep:
    """One optimiser step of the trained network (micro-batches, DDP's gradient sync, AMP, clipping); owns the
    optimiser and the learning-rate schedule, whose state it hands to checkpoints through `state_dict`."""

    def __init__(self, net: EvalNetwork, config: TrainConfig, genotype: Genotype, device: torch.device, rank: int,
                 world_size: int, channels_last: bool):
        self.net, self.config, self.rank, self.world_size = net, config, rank, world_size
        self.channels_last = channels_last
        self.use_amp = config.amp and device.type == "cuda"
        self.device_type = device.type
        self.optimizer = torch.optim.SGD(net.parameters(), config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: lr_factor(e, config.epochs, config.warmup_epochs))
        self.model: nn.Module = _TrainingForward(net)
        if world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=has_unused_inputs(genotype))

    def state_dict(self) -> dict[str, Any]:
        """The optimiser and the schedule, under the checkpoint keys every training run has used."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int, running: torch.Tensor) -> None:
        """One step on this process's rows of a global batch, in accum_steps micro-batches; adds the loss sum,
        correct and seen counts to `running` in place (no host-device sync per step)."""
        config, chunks = self.config, self.config.accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        for k, (xm, ym) in enumerate(zip(x.chunk(chunks), y.chunk(chunks))):
            torch.manual_seed(_micro_batch_seed(config.seed, epoch, step, self.rank * chunks + k))
            if self.channels_last:
                xm = xm.contiguous(memory_format=torch.channels_last)
            # gradients are all-reduced once per step, on the last micro-batch
            sync = contextlib.nullcontext() if self.world_size == 1 or k == chunks - 1 else self.model.no_sync()
            with sync:
                with torch.autocast(self.device_type, torch.bfloat16, enabled=self.use_amp):
                    logits, logits_aux = self.model(xm)
                loss = F.cross_entropy(logits.float(), ym, label_smoothing=config.label_smoothing)
                objective = loss
                if logits_aux is not None:
                    objective = loss + config.aux_weight * F.cross_entropy(
                        logits_aux.float(), ym, label_smoothing=config.label_smoothing)
                (objective / chunks).backward()
            running[0] += loss.detach().double() * len(ym)
            running[1] += (logits.argmax(1) == ym).sum()
            running[2] += len(ym)
        nn.utils.clip_grad_norm_(self.net.parameters(), config.grad_clip)
        self.optimizer.step()

    def end_epoch(self) -> None:
        """Advance the learning-rate schedule."""
        self.scheduler.step()

    @property
    def lr(self) -> float:
        """The current learning rate."""
        return self.optimizer.param_groups[0]["lr"]


@dataclass
class _TrainingData:
    """What a training run reads: the network's setting, the train / validation / test batches, and the
    input preprocessing a deployment must repeat (recorded in model.pt, carried into exported files)."""
    setting: EvalSetting
    train: BatchPlan
    val: BatchPlan | None
    test: BatchPlan
    preprocessing: dict[str, Any]


def _training_source(config: TrainConfig, checkpoint: dict | None) -> GenotypeSource:
    """The genotype to train and where it came from: the checkpoint's on a resume, else `config.genotype`."""
    if checkpoint is None:
        return load_source(config.genotype)
    return GenotypeSource(parse_genotype(checkpoint["genotype"]), checkpoint["source_name"],
                          recorded_dir(checkpoint), EvalSetting(**checkpoint["setting"]), checkpoint["budgets"])


def _training_data(config: TrainConfig, source: GenotypeSource, checkpoint: dict | None, rank: int,
                   world_size: int, device: torch.device, log: Callable[[str], None]) -> _TrainingData:
    """Load the data, fix the thread count and the network's setting, and build this process's loaders."""
    resume = checkpoint is not None
    if (not resume and source.setting is not None and source.dataset and config.image_size is None
            and config.dataset.lower() != source.dataset.lower()):
        size = source.setting.image_size
        raise ConfigError(f"{source.run_dir} searched a network for {source.dataset} ({size}x{size} images); training "
                          f"it on {config.dataset} would resize every image to {size}x{size}. Search on "
                          f"{config.dataset}, or pass --image-size {size} to do exactly that")
    image_size = config.image_size or (source.setting.image_size if source.setting else None)
    data = load_dataset(config.dataset, config.data_dir, image_size=image_size, data_mode=config.data_mode,
                        strict=config.strict_images)
    # resolved once and recorded: "auto" decides by the machine's memory, and a resume must read alike
    config.data_mode = "stream" if isinstance(data, StreamedDataset) else "memory"
    # fixed for the run and recorded in its config: the thread count changes the numerics (threads.py)
    config.threads = choose_threads(data.image_numel, device, config.threads)
    use_threads(config.threads)
    for name in getattr(data, "skipped", []):
        log(f"skipped an empty image file: {name}")
    setting = EvalSetting(**checkpoint["setting"]) if resume else resolve_setting(config, data, source.setting)
    validate_config(config, world_size, config.train_subset or round(len(data.train_y) * (1.0 - config.val_fraction)))
    train_ids = val_ids = None
    if config.val_fraction > 0:
        train_ids, val_ids = split_indices(len(data.train_y), 1.0 - config.val_fraction, seed=config.seed)
    if config.train_subset is not None:  # after the split, so the validation images stay the same
        pool = train_ids if train_ids is not None else torch.arange(len(data.train_y))
        train_ids = pool[balanced_indices(data.train_y[pool], config.train_subset, seed=config.seed)]
    if config.sync_bn and world_size > 1 and device.type != "cuda":
        raise ConfigError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernels); without it each "
                          "process normalises over its own micro-batch")
    streamed = dict(workers=config.data_workers, strict=config.strict_images, report=log)
    augment = default_augment(config.dataset, data.image_size, cutout=config.cutout)
    train = make_loader(data, "train", train_ids, config.batch_size, augment=augment, drop_last=True,
                        seed=config.seed, device=device, rank=rank, world_size=world_size, **streamed)
    val = (eval_loader(data, "train", val_ids, config.eval_batch_size, device, rank, world_size, **streamed)
           if val_ids is not None else None)
    test = eval_loader(data, "test", None, config.eval_batch_size, device, rank, world_size, **streamed)
    preprocessing = {"dataset": config.dataset, "image_size": data.image_size, "layout": "NCHW float32",
                     "normalise": "(pixel / 255 - mean) / std, per channel", "mean": list(data.mean),
                     "std": list(data.std), "classes": list(data.classes)}
    if isinstance(data, StreamedDataset):
        preprocessing["resize"] = (f"shorter side to image_size / {EVAL_CROP_FRACTION}, centre crop "
                                   "image_size x image_size (bilinear)")
    return _TrainingData(setting, train, val, test, preprocessing)


def _build_network(genotype: Genotype, setting: EvalSetting, config: TrainConfig, device: torch.device,
                   world_size: int) -> tuple[EvalNetwork, bool]:
    """The deployed network, seeded alike on every process; and whether it runs channels-last."""
    torch.manual_seed(config.seed)  # the same initial weights on every process
    net = EvalNetwork(genotype, setting).to(device)
    channels_last = config.channels_last is not False  # None: a config saved before CPU runs defaulted to it
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if config.sync_bn and world_size > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net, channels_last


def _train(config: TrainConfig, run_dir: str | Path | None, checkpoint: dict | None, rank: int, world_size: int,
           device: torch.device, progress: bool, log: Callable[[str], None]) -> TrainResult:
    main, resume = rank == 0, checkpoint is not None
    source = _training_source(config, checkpoint)
    genotype = source.genotype
    data = _training_data(config, source, checkpoint, rank, world_size, device, log)
    setting = data.setting
    net, channels_last = _build_network(genotype, setting, config, device, world_size)
    if not resume:
        refuse_budget_breaking_overrides(source, setting, net)
    stepper = TrainStep(net, config, genotype, device, rank, world_size, channels_last)
    selection = config.selection

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": None, "epoch": None}
    running = torch.zeros(3, dtype=torch.float64, device=device)  # this process's loss sum, correct, seen
    if resume:
        net.load_state_dict(checkpoint["model"])
        stepper.load_state_dict(checkpoint)
        history, best = checkpoint["history"], checkpoint["best"]
        if main:  # the saved sums are over all processes: give them to one so the epoch's total is unchanged
            running += torch.tensor(checkpoint["running"], dtype=torch.float64, device=device)
        log(f"resuming {run_dir} at epoch {checkpoint['epoch'] + 1}, step {checkpoint['step']}")
    else:
        run_dir = dist_utils.on_main(lambda: _new_run_dir(config, source, run_dir))
    run_dir = Path(run_dir)

    def evaluate_all() -> dict[str, float]:
        return {f"{name}_{what}": value for name, loader in (("val", data.val), ("test", data.test))
                if loader is not None for what, value in zip(("loss", "acc"), evaluate(
                    net, loader, amp=stepper.use_amp, channels_last=channels_last))}

    def postfix(step: int) -> dict[str, str] | None:
        if step % 10:  # reading the sums synchronises with the GPU: not every step
            return None
        loss_sum, correct, seen = running.tolist()
        return {"loss": f"{loss_sum / max(seen, 1):.3f}", "acc": f"{correct / max(seen, 1):.3f}"}

    run = Run(run_dir, checkpoint, label="train", epochs=config.epochs, steps_per_epoch=len(data.train),
              max_steps=config.max_steps, device=device, main=main, progress=progress, world_size=world_size,
              stop_check_every=_STOP_CHECK_EVERY, saved_totals=lambda totals: totals.tolist(),
              state=lambda: {"config": config.to_dict(), "genotype": genotype_to_text(genotype),
                             "setting": setting.to_dict(), "source": str(source.run_dir) if source.run_dir else None,
                             "source_name": source.name, "budgets": source.budgets, "model": net.state_dict(),
                             **stepper.state_dict(), "history": history, "best": best},
              totals=lambda: dist_utils.all_reduce_sum(running), finite=lambda totals: float(totals[0]),
              postfix=postfix)
    log(f"training {source.name}: {setting.cells} cells x {setting.channels} channels on {config.dataset}, "
        f"{config.epochs} epochs x {len(data.train)} steps, batch {config.batch_size} over {world_size} "
        f"process(es) on {device.type}")
    for epoch in run.epochs():
        net.train()
        net.drop_path_prob = config.drop_path * epoch / config.epochs  # DARTS' linear ramp
        for step, (x, y) in run.steps(epoch, data.train.epoch(epoch, run.start_step)):
            stepper.step(x, y, epoch, step, running)
        loss_sum, correct, seen = run.end_epoch(epoch, "training").tolist()
        average_bn_statistics(net)
        evaluated = epoch + 1 == config.epochs or run.at_max_steps or (epoch + 1) % config.eval_every == 0
        row: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
                               "train_acc": correct / max(seen, 1), **(evaluate_all() if evaluated else {}),
                               "lr": stepper.lr, "drop_path": net.drop_path_prob, "seconds": round(run.seconds, 3)}
        stepper.end_epoch()
        running.zero_()
        history.append(row)
        if selection != "last" and evaluated and (best["score"] is None or row[f"{selection}_acc"] > best["score"]):
            best = {"score": row[f"{selection}_acc"], "epoch": epoch}
            if main:
                save_model(run_dir / BEST_FILE, net, {"epoch": epoch, "metrics": row, "selection": selection})
        run.epoch_done(epoch, row, torch.zeros(3))
        log(f"epoch {epoch + 1}: train_acc {row['train_acc']:.4f} "
            + (f"val_acc {row['val_acc']:.4f} " if "val_acc" in row else "")
            + (f"test_acc {row['test_acc']:.4f} " if "test_acc" in row else "") + f"lr {row['lr']:.4g}")
    # --max-steps may end the run mid-epoch, even in its only epoch
    stopped_early = run.at_max_steps and run.total_steps < config.epochs * len(data.train)
    return _finish_training(config, run_dir, source, data, net, history, best, run, stopped_early, world_size, main)


def _finish_training(config: TrainConfig, run_dir: Path, source: GenotypeSource, data: _TrainingData,
                     net: EvalNetwork, history: list[dict[str, Any]], best: dict[str, Any], run: Run,
                     stopped_early: bool, world_size: int, main: bool) -> TrainResult:
    """The selected model, its size, the budgets it was searched for, and what is left for people."""
    selection = config.selection
    if selection != "last" and best["epoch"] is not None:
        if main:  # only rank 0 writes the model; the others need just the numbers
            net.load_state_dict(load_checkpoint(run_dir / BEST_FILE)["state_dict"])
        row = history[best["epoch"]]
    else:
        row = history[-1]
    net.drop_path_prob = 0.0
    net.eval()
    cost = measure_network(net)
    budgets = recheck_budgets(source.budgets, net)
    result = TrainResult(run_dir, source.genotype, data.setting, row["test_acc"], row["test_loss"], row.get("val_acc"),
                         row["epoch"], selection, cost.params, cost.params_with_aux, cost.flops, budgets,
                         str(source.run_dir) if source.run_dir else None, len(history), run.total_steps,
                         run.seconds, world_size, stopped_early)
    if main:
        save_model(run_dir / MODEL_FILE, net, {"metrics": row, "budgets": budgets, "config": config.to_dict(),
                                               "selection": selection, "flops_convention": FLOPS_CONVENTION,
                                               "preprocessing": data.preprocessing})
        write_json(run_dir / "result.json", {**result.to_dict(), "config": config.to_dict()})
        plot_learning_curves(history, run_dir / "learning_curves.png")
        write_train_report(result, config, history)
    dist_utils.barrier()  # nobody leaves (and tears the group down) while rank 0 still writes
    return result


def _load_resume(run_dir: str | Path | None) -> dict:
    path = prepare_run_dir(run_dir, True, "")
    checkpoint = load_checkpoint(path / CHECKPOINT)
    if not isinstance(checkpoint, dict) or "genotype" not in checkpoint or "optimizer" not in checkpoint:
        raise RunDirError(f"{path / CHECKPOINT} is not a `dcanas train` checkpoint; resume it with the command "
                          f"that wrote it")
    return checkpoint


def recorded_dir(checkpoint: dict) -> Path | None:
    """The search run folder a checkpointed training run came from, if any."""
    return Path(checkpoint["source"]) if checkpoint.get("source") else None


def _new_run_dir(config: TrainConfig, source: GenotypeSource, run_dir: str | Path | None) -> Path:
    path = prepare_run_dir(run_dir, False, f"train-{config.dataset}-{source.name}")
    write_json(path / "config.json", config.to_dict())
    return path


# -- what a run leaves for people ----------------------------------------------------------------------------

def plot_learning_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch (train, val when held out, test) into one PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] + 1 for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ("loss", "acc")):
        for split in ("train", "val", "test"):
            key = f"{split}_{metric}"
            points = [(e, r[key]) for e, r in zip(epochs, history) if key in r]  # --eval-every skips epochs
            if points:
                ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=split)
        ax.set(title="accuracy" if metric == "acc" else "cross-entropy", xlabel="epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_train_report(result: TrainResult, config: TrainConfig, history: list[dict[str, Any]]) -> None:
    """report.md: the network, the recipe, the selected model's accuracy, its size and the budget check."""
    s = result.setting
    recipe = (f"{config.epochs} epochs, batch {config.batch_size} (global, {result.world_size} process(es)), SGD lr "
              f"{config.lr:g} cosine to 0" + (f" after {config.warmup_epochs} warm-up epochs" if config.warmup_epochs
                                             else "")
              + f", momentum {config.momentum:g}, weight decay {config.weight_decay:g}, gradient clipping "
              f"{config.grad_clip:g}, cutout {config.cutout}, drop-path {config.drop_path:g} (linear ramp), "
              f"auxiliary weight {config.aux_weight:g}, label smoothing {config.label_smoothing:g}, seed {config.seed}")
    chosen = {"last": "the last epoch", "val": f"the best epoch on a held-out {config.val_fraction:.0%} of train",
              "test": "the best epoch on the test set (DARTS' practice; optimistic)"}[result.selection]
    lines = [
        f"# Training: {config.dataset}", "",
        f"Genotype: `{genotype_to_text(result.genotype)}`" + (f" (from search run `{result.source}`)"
                                                             if result.source else ""), "",
        (f"Network: {s.style} stem, {s.cells} cells, {s.channels} channels, {s.in_channels}x{s.image_size}x"
         f"{s.image_size} input, {s.num_classes} classes, auxiliary head {'on' if s.auxiliary else 'off'}."), "",
        f"Recipe: {recipe}." + (" Stopped early by --max-steps." if result.stopped_early else ""), "",
        f"Selected model: epoch {result.selected_epoch + 1} of {len(history)} ({chosen}), saved as `{MODEL_FILE}`.",
        "",
        "| | value |", "|---|---|",
        f"| test accuracy | {result.test_acc:.4f} |",
    ]
    if result.val_acc is not None:
        lines.append(f"| held-out accuracy | {result.val_acc:.4f} |")
    lines += [f"| params (no aux, deployed) | {result.params:,} |", f"| params with aux | {result.params_with_aux:,} |",
              f"| FLOPs | {result.flops:,} |", f"| training time | {result.seconds:.1f} s, {result.steps} steps |",
              "", f"FLOPs convention: {FLOPS_CONVENTION}.", ""]
    if result.budgets:
        lines += ["Budgets recorded by the search, re-checked on the trained network:", "",
                  "| metric | budget | searched | trained network | within |", "|---|---|---|---|---|"]
        for metric, b in result.budgets.items():
            value = f"{readable(b['value'])}" if b["value"] is not None else "?"
            searched = f"{readable(b['searched_value'])}" if b.get("searched_value") is not None else ""
            lines.append(f"| {metric} | {readable(b['limit'])} | {searched} | {value}"
                         f"{'' if b['recounted'] else ' (not recounted)'} | {'yes' if b['ok'] else 'NO'} |")
        lines.append("")
    lines += ["![learning curves](learning_curves.png)", ""]
    atomic_write_text(result.run_dir / "report.md", "\n".join(lines))
