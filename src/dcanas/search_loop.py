"""DCA-NAS search: the first-order bilevel loop with the device constraint, readable top to bottom.

Under torchrun each process takes its rows of every global batch (--batch-size is global) and the
alpha and weight gradients are averaged over processes before each optimiser step, so alphas, weights,
multipliers and the derived genotype are the same on every process at every step; rank 0 alone writes
the run folder. A run depends on the global batch and on the micro-batch BatchNorm normalises over,
batch_size / (processes x accum_steps), not on how many processes share the work.
"""
from __future__ import annotations

from dataclasses import asdict, astuple, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import distributed as dist_utils
from .constraint import Budget, Constraint, budget_share, check_budgets, cost_summary, parameter_free_notes
from .search_config import SearchConfig
from .data import BatchPlan, balanced_indices, default_augment, load_dataset, split_indices
from .data.stream import StreamedDataset, make_loader
from .errors import ConfigError, RunDirError
from .proxies import rerank, scores_networks, votes_on_budget
from .run_loop import Run
from .runs import (CHECKPOINT, load_checkpoint, prepare_run_dir, record_run_info, refuse_resume_after_max_steps,
                   write_json)
from .selection import PerturbationScores, perturbation_scores
from .settling import SettlingTrace
from .remedies import alpha_noise_level, beta_decay_loss, beta_decay_weight, random_perturbations
from .spaces import SPACES, SearchSpace
from .threads import choose_threads, use_threads
from .units import human


def prepare_search(config: SearchConfig):
    """Load the data, resolve the deployed setting, build its cost table, and refuse unreachable budgets."""
    config.validate()
    space = SPACES.get(config.space)
    data = load_dataset(config.dataset, config.data_dir, download=config.download, image_size=config.image_size,
                        data_mode=config.data_mode, strict=config.strict_images)
    # resolved once and recorded: "auto" decides by the machine's memory, and a resume must read alike
    config.data_mode = "stream" if isinstance(data, StreamedDataset) else "memory"
    setting = space.eval_setting(config, data.in_channels, data.num_classes, data.image_size)
    if config.space == "darts" and config.search_stem is None:  # resolved and recorded: as the deployed network's
        config.search_stem = setting.style
    table = space.cost_table(setting, config)
    budgets = config.budgets()
    check_budgets(table, budgets, space.suggest)
    return data, setting, table, budgets


def dry_run(config: SearchConfig) -> dict[str, Any]:
    """Build everything a search needs and report its sizes without training."""
    data, setting, table, budgets = prepare_search(config)
    search_halves(data, config)  # what a real run would refuse about its batches, refused here as well
    model = build_supernet(config, data.in_channels, data.num_classes)
    bounds = {m: dict(zip(("min", "max"), table.bounds(m))) for m in table.entries}
    return {"supernet_weights": sum(p.numel() for p in model.weight_parameters()),
            "deployable": bounds, "setting": setting.to_dict(), "budgets": [b.to_dict() for b in budgets],
            "dataset": {"name": data.name, "train": len(data.train_y), "test": len(data.test_y),
                        "shape": [data.in_channels, data.image_size, data.image_size], "classes": data.num_classes,
                        "data_mode": config.data_mode}}


def build_supernet(config: SearchConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    """The search supernet described by `config`, in its search space."""
    return SPACES.get(config.space).build_supernet(config, in_channels, num_classes)


class BilevelStep:
    """The two updates of one first-order search step (shared by run_search and the benchmarks)."""

    def __init__(self, model: torch.nn.Module, config: SearchConfig, constraint: Constraint | None, device: torch.device):
        self.model = model
        self.constraint = constraint
        self.grad_clip = config.grad_clip
        self.accum_steps = config.accum_steps
        self.use_amp = config.amp and device.type == "cuda"
        self.device_type = device.type
        self.beta_weight = 0.0  # beta-decay regulariser's weight for the next alpha step (set by the loop)
        self.alpha_noise = 0.0  # SDARTS-RS's bound on the mixing weights' noise in the next weight step (the loop)
        self.penalty_step = config.penalty_step
        self.penalty_lr = config.penalty_lr
        self.w_opt = torch.optim.SGD(model.weight_parameters(), config.lr, momentum=config.momentum,
                                     weight_decay=config.weight_decay)
        self.a_opt = torch.optim.Adam(model.arch_parameters() + _edge_parameters(model), config.arch_lr,
                                      betas=config.arch_betas, weight_decay=config.arch_weight_decay)

    def state_dict(self) -> dict[str, Any]:
        """Both optimisers and the multipliers, under the checkpoint keys every search has used."""
        return {"w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "constraint": self.constraint.state_dict() if self.constraint is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        if self.constraint is not None:
            self.constraint.load_state_dict(state["constraint"])

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device_type, torch.bfloat16, enabled=self.use_amp):
            logits = self.model(x)
        return logits, F.cross_entropy(logits.float(), y)

    def _micro_batches(self, x: torch.Tensor, y: torch.Tensor):
        return zip(x.chunk(self.accum_steps), y.chunk(self.accum_steps))

    def alpha_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
        """Adam on alpha: validation loss plus lambda times the normalised violation (plus the beta-decay
        regulariser when `self.beta_weight` > 0); then lambda ascends."""
        model, constraint = self.model, self.constraint
        alphas = model.arch_parameters()
        searched = [a for a in alphas if a.requires_grad]  # not a pinned (fixed) cell's
        learned = searched + _edge_parameters(model)  # PC-DARTS's edge weights learn from the loss alone
        self.a_opt.zero_grad(set_to_none=True)
        losses, correct = [], 0
        for xm, ym in self._micro_batches(x, y):
            logits, loss = self._forward(xm, ym)
            # only alpha needs gradients here: skip the weight gradients a full backward would compute
            _add_grads(learned, torch.autograd.grad(loss / self.accum_steps, learned))
            losses.append(loss.item())
            correct += (logits.argmax(1) == ym).sum().item()
        dist_utils.average_gradients(learned)  # the global batch's gradient: the same step on every process
        if self.beta_weight > 0:  # depends on alpha alone, like the penalty: added once, after the average
            _add_grads(searched, torch.autograd.grad(self.beta_weight * beta_decay_loss(searched), searched))
        costs = penalty_grads = None
        if constraint is not None:  # the penalty depends on alpha alone: added once, after the average
            costs = constraint.expected_costs(alphas, model.genotype)
            penalty_grads = torch.autograd.grad(constraint.penalty(costs), searched)
            if self.penalty_step == "adam":
                _add_grads(searched, penalty_grads)
        self.a_opt.step()
        if penalty_grads is not None and self.penalty_step == "sgd":
            # outside Adam: Adam normalises each alpha's step, so any lambda > 0 moved every edge towards
            # cheap ops at full speed (bang-bang between all-skip and all-conv); a plain step scales with lambda
            with torch.no_grad():
                for alpha, g in zip(searched, penalty_grads):
                    alpha.sub_(self.penalty_lr * g)
        if constraint is not None:
            constraint.update(costs)  # the derived genotype's cost: the same on every process
        model.update_derived()  # the derived cells follow the new alphas
        return sum(losses) / len(losses), correct, len(y)

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
        """SGD on the supernet weights on a training batch (with SDARTS-RS, under randomly perturbed mixing
        weights: the weights learn to work in a neighbourhood of alpha, not at one point of it)."""
        self.w_opt.zero_grad(set_to_none=True)
        losses, correct = [], 0
        self.model.perturbation = random_perturbations(self.model.arch_parameters(), self.alpha_noise)
        try:
            for xm, ym in self._micro_batches(x, y):
                logits, loss = self._forward(xm, ym)
                (loss / self.accum_steps).backward()
                losses.append(loss.item())
                correct += (logits.argmax(1) == ym).sum().item()
        finally:
            self.model.perturbation = None
        for alpha in self.model.arch_parameters() + _edge_parameters(self.model):  # the weight loss must not move alpha
            alpha.grad = None
        # not DDP: the derived cells change the graph every step and leave most weights without a gradient
        dist_utils.average_gradients(self.model.weight_parameters())
        torch.nn.utils.clip_grad_norm_(self.model.weight_parameters(), self.grad_clip)
        self.w_opt.step()
        return sum(losses) / len(losses), correct, len(y)


SCORE_IMAGES = 10_000  # validation images the one-shot score of a derived network looks at, at most


@torch.no_grad()
def derived_accuracy(model: torch.nn.Module, genotype: Any, val: BatchPlan,
                     resize: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> float:
    """Accuracy on the alpha half of the supernet run as the derived network in every cell (shared weights).

    BatchNorm uses batch statistics, as during the search: the running statistics were gathered on the
    mixture, not on the derived network. Runs after the last checkpoint, so the statistics it moves are
    never saved. A one-shot proxy for "train each derived network and compare on validation".
    """
    model.train()
    previous, model.genotype = model.genotype, genotype
    correct = seen = 0
    try:
        for x, y in val.epoch(0):
            correct += (model(resize(x), all_derived=True).argmax(1) == y).sum().item()
            seen += len(y)
            if seen >= SCORE_IMAGES:
                break
    finally:
        model.genotype = previous
    device = next(model.parameters()).device
    total = dist_utils.all_reduce_sum(torch.tensor([correct, seen], dtype=torch.float64, device=device))
    return float(total[0] / max(total[1], 1))


def _resizer(size: int | None, image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Resize batches to the supernet's resolution (antialiased), or pass them through."""
    if size is None or size == image_size:
        return lambda x: x
    return lambda x: F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _edge_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Architecture weights that carry no cost (PC-DARTS's edge normalisation), if the supernet has any."""
    return model.edge_parameters() if hasattr(model, "edge_parameters") else []


def _add_grads(params: list[torch.Tensor], grads: tuple[torch.Tensor, ...]) -> None:
    for p, g in zip(params, grads):
        p.grad = g if p.grad is None else p.grad + g


@dataclass
class SearchResult:
    """What a search hands back."""

    space: SearchSpace
    genotype: Any  # the space's genotype type (DARTS Genotype, NB201 Arch)
    run_dir: Path
    setting: Any
    params: int
    flops: int
    budgets: dict[str, dict]
    repairs: list[str]
    raw_genotype: Any
    seconds: float
    steps: int
    benchmark: dict[str, Any] = field(default_factory=dict)  # e.g. NB201's true accuracies of the genotype
    derived_val_acc: float | None = None  # one-shot accuracy of the derived network on the alpha half
    fills: list[str] = field(default_factory=list)  # ops upgraded to spend unused budget (--fill-budget)
    unfilled_genotype: Any = None  # what fill started from (raw, or raw repaired); None when fill changed nothing
    mixing_weights: dict[str, list] = field(default_factory=dict)  # final weights per alpha name (--repeats consensus)
    rerank: dict[str, Any] = field(default_factory=dict)  # --rerank: the proxy and every candidate it scored
    derivation: dict[str, Any] = field(default_factory=dict)  # --derive-by perturbation: every drop it measured
    notes: list[str] = field(default_factory=list)  # e.g. a budget that itself demands parameter-free ops
    settling: dict[str, Any] = field(default_factory=dict)  # when the alphas' cell last changed (settling.py)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what `dcanas search --json` prints)."""
        result = {"space": self.space.name, "genotype": self.space.to_text(self.genotype),
                  "genotype_json": self.space.to_dict(self.genotype), "params": self.params, "flops": self.flops,
                  "budgets": self.budgets, "repairs": self.repairs,
                  "raw_genotype": self.space.to_text(self.raw_genotype), "setting": self.setting.to_dict(),
                  "run_dir": str(self.run_dir), "search_seconds": round(self.seconds, 2), "steps": self.steps}
        if self.benchmark:
            result["benchmark"] = self.benchmark
        if self.derived_val_acc is not None:
            result["derived_val_acc"] = self.derived_val_acc
        if self.fills:
            result["fills"] = self.fills
            result["unfilled_genotype"] = self.space.to_text(self.unfilled_genotype)
        if self.mixing_weights:
            result["mixing_weights"] = self.mixing_weights
        if self.rerank:
            result["rerank"] = self.rerank
        if self.derivation:
            result["derivation"] = self.derivation
        if self.notes:
            result["notes"] = self.notes
        if self.settling:
            result["settling"] = self.settling
        return result


def evaluation_weights(space: SearchSpace, alphas: list[torch.Tensor]) -> dict[str, list]:
    """Each edge's mixing weights at evaluation (softmax of the ranking logits), by alpha name: JSON-ready."""
    return {name: F.softmax(a.detach().float(), -1).cpu().tolist() for name, a in zip(space.alpha_names, alphas)}


def derived_result(space: SearchSpace, config: SearchConfig, raw: Any, alphas: list[torch.Tensor], setting: Any,
                   table: Any, budgets: list, run_dir: Path, seconds: float, steps: int,
                   probe: torch.Tensor | None = None) -> SearchResult:
    """The derived genotype `raw` landed in the budgets (repair if over, then fill unused budget, both ranked
    by `alphas`; then, with --rerank, a zero-cost proxy on `probe` images chooses among the alphas' top
    landings), with its exact costs: the end of a search, and of a consensus of several."""
    # --budget-scope landing: the search never saw the budget, so `raw` is expected to break it; the space's
    # list of the alphas' best architectures inside the budget is the landing itself, not a repair
    landing_only = config.budget_scope == "landing" and bool(budgets)
    genotype, repairs = (space.repair(raw, alphas, table, budgets) if config.repair and budgets and not landing_only
                         else (raw, []))
    fills: list[str] = []
    fill = config.fill_budget if config.fill_budget is not None else space.fills_by_default
    unfilled = genotype
    if fill and budgets and not landing_only:  # after a repair too: its walk can leave budget unused
        genotype, fills = space.fill(genotype, alphas, table, budgets)
    reranked: dict[str, Any] = {}
    proxy = config.rerank_proxy()
    if landing_only and proxy is None:
        genotype = space.landing_candidates(alphas, table, budgets, 1, bool(fill))[0]
    elif proxy is not None:
        candidates = space.landing_candidates(alphas, table, budgets, config.rerank_top, bool(fill),
                                              whole_band=votes_on_budget(proxy))
        shares = [budget_share(table, g, budgets) for g in candidates] if budgets else None
        unranked = genotype  # what --rerank none lands (repair, fill): kept for comparison
        genotype, scored = rerank(space, candidates, setting, proxy, probe, config.seed, shares)
        reranked = {"proxy": proxy, "top": config.rerank_top, "candidates": scored,
                    "without_rerank": space.to_text(unranked)}
    deployed = space.deployed_cost(genotype, setting)
    # the note's narrower widths are counted (params, FLOPs): a measured latency table holds one width only
    counted_only = replace(config, latency_table=None, latency_device=None, max_latency=None)
    return SearchResult(space, genotype, run_dir, setting, deployed["params"], deployed["flops"],
                        cost_summary(table, genotype, budgets), repairs, raw, seconds, steps,
                        space.describe(genotype, config, table, budgets), fills=fills,
                        unfilled_genotype=unfilled if fills else None,
                        mixing_weights=evaluation_weights(space, alphas), rerank=reranked,
                        notes=parameter_free_notes(table, genotype, budgets, lambda c: space.cost_table(
                            setting.replace(channels=c), counted_only)))


PROBE_IMAGES = 64  # NASWOT's authors score a batch of 128 at 32 px; 64 ranks NB201 alike (BENCHMARKS.md §12)


def search_halves(data: Any, config: SearchConfig, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images the weights learn from and the held-out ones the alphas learn from (all training
    images, or a class-balanced --train-subset of them, split in two by the seed); a batch that cannot be split
    over the processes or filled from a half is refused here, so a dry run refuses it too."""
    images = None
    if config.train_subset is not None:
        if config.train_subset > len(data.train_y):
            raise ConfigError(f"--train-subset {config.train_subset} exceeds the {len(data.train_y)} training images")
        images = balanced_indices(data.train_y, config.train_subset, seed=config.seed)
    halves = split_indices(len(data.train_y) if images is None else len(images), 0.5, seed=config.seed)
    halves = halves if images is None else (images[halves[0]], images[halves[1]])
    if config.accum_steps < 1 or config.batch_size % (world_size * config.accum_steps):
        raise ConfigError(f"--batch-size {config.batch_size} (the global batch) must be a positive multiple of "
                          f"processes x --accum-steps = {world_size} x {config.accum_steps}")
    if config.batch_size > min(len(h) for h in halves):
        raise ConfigError(f"--batch-size {config.batch_size} exceeds the {min(len(h) for h in halves)} training "
                          "images of one half")
    return halves


def derive_from_supernet(model: torch.nn.Module, space: SearchSpace, config: SearchConfig, table: Any, data: Any,
                         val_ids: Any, resize: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                         rank: int = 0, world_size: int = 1, progress: bool = False
                         ) -> tuple[Any, list[torch.Tensor], PerturbationScores | None]:
    """The finished supernet's genotype, the ranking logits repair and fill go by, and (--derive-by
    perturbation) the accuracy drops they came from; by the alphas, the supernet's own derive. Processes
    score a share of the images each and add their counts, so every one derives the same."""
    alphas = model.ranking_alphas()
    if config.derive_by != "perturbation":
        return model.derive(), alphas, None
    images, labels = fixed_batch(data, val_ids, config.derive_images, config.seed, device)  # of the alpha half
    share = slice(rank * len(labels) // world_size, (rank + 1) * len(labels) // world_size)
    scores = perturbation_scores(model, resize(images[share]), labels[share], list(table.ops).index("none"),
                                 space.chooses_inputs, total=dist_utils.all_reduce_sum, progress=progress)
    logits = [drops.to(device=a.device, dtype=torch.float32) for drops, a in zip(scores.logits(), alphas)]
    return space.derive(logits, config, scores.edge_drops), logits, scores


def fixed_batch(data: Any, ids: Any, count: int, seed: int, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` of the training images `ids` (a draw fixed by `seed`), unaugmented and normalised, with their labels:
    the same images for a search and its resume."""
    ids = torch.as_tensor(ids)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))[:min(count, len(ids))]
    images, labels = next(iter(make_loader(data, "train", ids[order], len(order), augment=None, seed=seed,
                                           shuffle=False, device=device)))
    return images.float(), labels


def probe_batch(data: Any, config: SearchConfig) -> torch.Tensor:
    """A fixed batch of training images at the deployed size, on the CPU: what --rerank's proxy scores the
    candidate networks on."""
    return fixed_batch(data, torch.arange(len(data.train_y)), PROBE_IMAGES, config.seed)[0].cpu()


def run_search(config: SearchConfig | None, run_dir: str | Path | None = None, *, resume: bool = False,
               progress: bool = True, log: Callable[[str], None] = print) -> SearchResult:
    """Search, derive, verify (and repair) against every budget; resumable from its run folder; torchrun-aware."""
    checkpoint = None
    if resume:  # every process reads the checkpoint (on several nodes the run folder must be shared)
        run_dir = prepare_run_dir(run_dir, True, "")
        checkpoint = load_checkpoint(run_dir / CHECKPOINT)
        if not isinstance(checkpoint, dict) or "a_opt" not in checkpoint or not isinstance(checkpoint.get("config"),
                                                                                             dict):
            hint = ("it is a training run: resume it with `dcanas train --resume`"
                    if isinstance(checkpoint, dict) and "optimizer" in checkpoint else "it was not written by dcanas")
            raise RunDirError(f"{run_dir / CHECKPOINT} is not a `dcanas search` checkpoint; {hint}")
        config = SearchConfig.from_dict(checkpoint["config"])
        refuse_resume_after_max_steps(checkpoint, config.max_steps, run_dir,
                                      "to search longer, search again in a new run folder")
        if dist_utils.is_launch_rank_0():
            record_run_info(run_dir, resumed=True)
    if config is None:
        raise ConfigError("give a SearchConfig, or resume=True with the run folder to continue")
    config.validate()
    config = config.with_rerank_pinned()
    rank, world_size, device = dist_utils.init_distributed(config.device)
    threads_before = torch.get_num_threads()
    try:
        return _search(config, run_dir, checkpoint, rank, world_size, device, progress and rank == 0,
                       log if rank == 0 else (lambda message: None))
    finally:
        use_threads(threads_before)
        dist_utils.cleanup()


def _search(config: SearchConfig, run_dir: str | Path | None, checkpoint: dict | None, rank: int,
            world_size: int, device: torch.device, progress: bool, log: Callable[[str], None]) -> SearchResult:
    main, resume = rank == 0, checkpoint is not None

    if config.download and world_size > 1:  # rank 0 fetches (every process would write the same files), then all load
        dist_utils.on_main(lambda: load_dataset(config.dataset, config.data_dir, download=True).name)
    data, setting, table, budgets = prepare_search(config)
    # fixed for the run and recorded in its config: the thread count changes the numerics (threads.py)
    config.threads = choose_threads(data.image_numel, device, config.threads)
    use_threads(config.threads)
    for name in getattr(data, "skipped", []):
        log(f"skipped an empty image file: {name}")
    train_ids, val_ids = search_halves(data, config, world_size)
    resize = _resizer(config.search_image_size, data.image_size)
    augment = default_augment(config.dataset, data.image_size)
    loader_args = dict(augment=augment, drop_last=True, device=device, rank=rank, world_size=world_size,
                       workers=config.data_workers, strict=config.strict_images, report=log)
    train = make_loader(data, "train", train_ids, config.batch_size, seed=config.seed, **loader_args)
    val = make_loader(data, "train", val_ids, config.batch_size, seed=config.seed + 1, **loader_args)
    search_budgets = [Budget(b.metric, config.search_budgets.get(b.metric, b.limit)) for b in budgets]

    # -- the supernet, its optimisers and the constraint
    # seeded here, after data and cost tables: building a table may draw from the global RNG, and tables are
    # cached, so seeding earlier made a search depend on what ran before it in the same process
    torch.manual_seed(config.seed)  # the same initial weights and alphas on every process
    model = build_supernet(config, data.in_channels, data.num_classes).to(device)
    constraint = (Constraint(table, search_budgets, config.constraint, config.lambda_lr, device,
                             floor=config.budget_floor, scope=config.budget_scope)
                  if budgets and config.budget_scope != "landing" else None)
    stepper = BilevelStep(model, config, constraint, device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(stepper.w_opt, config.epochs, eta_min=0.0)

    running = _Running()
    space = SPACES.get(config.space)
    if resume:
        model.load_state_dict(checkpoint["model"])
        stepper.load_state_dict(checkpoint)
        scheduler.load_state_dict(checkpoint["scheduler"])
        if main:  # the saved sums are over all processes: give them to one so the epoch's total is unchanged
            running = _Running(**checkpoint["running"])
        model.update_derived()
        log(f"resuming {run_dir} at epoch {checkpoint['epoch'] + 1}, step {checkpoint['step']}")
    else:
        run_dir = dist_utils.on_main(lambda: _new_run_dir(config, run_dir))
    run_dir = Path(run_dir)

    steps_per_epoch = min(len(train), len(val))
    # alphas and multipliers stay put until the candidate ops' weights have trained a while, so that
    # parameter-free ops do not win merely because untrained convolutions are noisy
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    planned_steps = config.epochs * steps_per_epoch if config.max_steps is None else min(
        config.max_steps, config.epochs * steps_per_epoch)
    settling = SettlingTrace(max(planned_steps - warmup_steps, 0))  # did the alphas' cell stop moving?
    if resume:
        settling.load_state_dict(checkpoint.get("settling"))
    run = Run(run_dir, checkpoint, label="search", epochs=config.epochs, steps_per_epoch=steps_per_epoch,
              max_steps=config.max_steps, device=device, main=main, progress=progress, world_size=world_size,
              saved_totals=asdict,
              state=lambda: {"config": config.to_dict(), "model": model.state_dict(), **stepper.state_dict(),
                             "scheduler": scheduler.state_dict(), "settling": settling.state_dict()},
              totals=lambda: running.total(device), finite=lambda r: r.train_loss + r.val_loss,
              postfix=lambda step: {"val_acc": f"{running.val_acc:.3f}" if running.val_seen else "warm-up",
                                    **_lambda_postfix(constraint)})
    history = _load_history(run_dir / "history.json", run.start_epoch) if resume and main else []
    beta_weight = (lambda step: 0.0) if config.remedy != "beta-decay" else (
        lambda step: beta_decay_weight(step - warmup_steps, planned_steps - warmup_steps, config.beta_weight))
    for epoch in run.epochs():
        model.train()
        batches = zip(train.epoch(epoch, run.start_step), val.epoch(epoch, run.start_step))
        for _, ((xt, yt), (xv, yv)) in run.steps(epoch, batches):
            if run.total_steps >= warmup_steps:
                stepper.beta_weight = beta_weight(run.total_steps)
                running.add_val(*stepper.alpha_step(resize(xv), yv))
                settling.observe(space.cell_edges(model.derive()))
            stepper.alpha_noise = alpha_noise_level(run.total_steps, planned_steps, config.alpha_noise)
            running.add_train(*stepper.weight_step(resize(xt), yt))
        running_total = run.end_epoch(epoch, "the search")
        scheduler.step()
        record = _epoch_record(space, epoch, running_total, model, table, budgets, constraint,
                               stepper.w_opt, run.seconds)
        running = _Running()
        if main:
            history.append(record["history"])
            write_json(run_dir / "history.json", history)
        run.epoch_done(epoch, record["metrics"], running)
        if progress:
            m = record["metrics"]
            val_text = "warm-up" if m["val_acc"] is None else f"{m['val_acc']:.3f}"
            log(f"epoch {epoch + 1}: val_acc {val_text} "
                + " ".join(f"{b.metric} {m['derived_' + b.metric]:,.0f}/{b.limit:,.0f}" for b in budgets))
    seconds, total_steps, stopped = run.seconds, run.total_steps, run.at_max_steps

    # -- derive, verify against every budget, and repair if the derived network breaks one
    probe = probe_batch(data, config) if scores_networks(config.rerank_proxy()) else None
    raw, alphas, scores = derive_from_supernet(model, space, config, table, data, val_ids, resize, device, rank,
                                               world_size, progress=progress and main)
    result = derived_result(space, config, raw, alphas, setting, table, budgets, run_dir, seconds, total_steps, probe)
    result.settling = settling.summary()
    if (unsettled := settling.note()) is not None:
        result.notes.append(unsettled)
    if scores is not None:
        result.derivation = scores.to_dict(space.alpha_names)
    if config.score_derived:
        result.derived_val_acc = derived_accuracy(model, result.genotype, val, resize)
    if main:
        from .report import write_search_report

        write_search_report(result, config, table, history, stopped_early=stopped)
    dist_utils.barrier()  # nobody leaves (and tears the group down) while rank 0 still writes
    return result


@dataclass
class _Running:
    """Loss/accuracy sums over the current epoch (checkpointed, so a resumed epoch reports the same)."""

    train_loss: float = 0.0
    train_correct: int = 0
    train_seen: int = 0
    val_loss: float = 0.0
    val_correct: int = 0
    val_seen: int = 0

    def add_train(self, loss: float, correct: int, n: int) -> None:
        """Accumulate one weight step."""
        self.train_loss += loss * n
        self.train_correct += correct
        self.train_seen += n

    def add_val(self, loss: float, correct: int, n: int) -> None:
        """Accumulate one alpha step."""
        self.val_loss += loss * n
        self.val_correct += correct
        self.val_seen += n

    @property
    def val_acc(self) -> float:
        return self.val_correct / max(self.val_seen, 1)

    def total(self, device: torch.device) -> "_Running":
        """The sums over all processes."""
        sums = dist_utils.all_reduce_sum(torch.tensor(astuple(self), dtype=torch.float64, device=device))
        return _Running(*(type(mine)(v) for mine, v in zip(astuple(self), sums.tolist())))


def _lambda_postfix(constraint: Constraint | None) -> dict[str, str]:
    if constraint is None:
        return {}
    return {f"lam_{b.metric}": f"{v:.3f}" for b, v in zip(constraint.budgets, constraint.lambdas.tolist())}


def _epoch_record(space: SearchSpace, epoch: int, running: _Running, model: torch.nn.Module, table: Any,
                  budgets: list[Budget], constraint: Constraint | None, w_opt: torch.optim.Optimizer,
                  seconds: float) -> dict:
    """Metrics row and history entry (softmax alphas, genotype, sizes, multipliers) at the end of an epoch."""
    genotype = model.derive()
    derived = table.genotype_cost(genotype)
    n = max(running.train_seen, 1)
    row: dict[str, Any] = {
        "epoch": epoch, "train_loss": running.train_loss / n, "train_acc": running.train_correct / n,
        # no alpha step in a warm-up epoch: no validation figures rather than zeros
        "val_loss": running.val_loss / running.val_seen if running.val_seen else None,
        "val_acc": running.val_acc if running.val_seen else None,
        "lr": w_opt.param_groups[0]["lr"], "seconds": round(seconds, 3),
        "derived_params": derived["params"], "derived_flops": derived["flops"],
    }
    for metric in ("latency", "memory"):  # in the table only when a budget asks for them
        if metric in derived:
            row[f"derived_{metric}"] = derived[metric]
    if constraint is not None:
        costs = constraint.expected_costs([a.detach() for a in model.arch_parameters()], genotype)
        for b, c, lam in zip(constraint.budgets, costs, constraint.lambdas.tolist()):
            row[f"search_{b.metric}"] = float(c)
            row[f"lambda_{b.metric}"] = lam
    hist = {"epoch": epoch, "genotype": space.to_text(genotype),
            "alphas": evaluation_weights(space, model.ranking_alphas()), "metrics": row}
    return {"metrics": row, "history": hist}


def _load_history(path: Path, keep_epochs: int) -> list[dict]:
    import json

    if not path.is_file():
        return []
    try:
        return [h for h in json.loads(path.read_text()) if h["epoch"] < keep_epochs]
    except (ValueError, KeyError):
        raise RunDirError(f"{path} is corrupt; the run cannot be resumed cleanly") from None


def _new_run_dir(config: SearchConfig, run_dir: str | Path | None) -> Path:
    path = prepare_run_dir(run_dir, False, _run_name(config))
    write_json(path / "config.json", config.to_dict())
    return path


def _run_name(config: SearchConfig) -> str:
    parts = [config.dataset]
    for b in config.budgets():
        parts.append(f"{b.metric}{human(b.limit, 4)}")
    return "-".join(parts)

