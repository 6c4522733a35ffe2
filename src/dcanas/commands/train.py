"""`dcanas train`: train a genotype's deployed network from scratch (also under torchrun), or resume."""
from __future__ import annotations

import argparse
import os

from .common import add_data_mode_options, add_threads_option, amount, emit, human, load_config_file, stderr_log

ORDER = 40


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume training) and print the selected model's accuracy, size and budget check."""
    from ..errors import ConfigError
    from ..train_loop import EXECUTION_FIELDS, TrainConfig, make_config, run_training

    given = {k: v for k, v in vars(args).items() if k in TrainConfig().to_dict() and v is not None}
    given.pop("genotype", None)
    if args.config:
        if args.resume:
            raise ConfigError("--config starts a new run from saved options; --resume continues one as it was")
        saved = load_config_file(args.config, TrainConfig, "training run")
        args.genotype = args.genotype or saved.get("genotype")
        given = {**{k: v for k, v in saved.items() if k != "genotype" and v is not None}, **given}
    if args.resume:
        if args.genotype:
            raise ConfigError("--resume continues the run in RUN_DIR with its own genotype; drop the GENOTYPE argument")
        changed = sorted(set(given) - set(EXECUTION_FIELDS))
        if changed:
            raise ConfigError(f"--resume keeps the run's settings; only {', '.join(EXECUTION_FIELDS)} may change "
                              f"(got {', '.join(changed)})")
        result = run_training(None, args.resume, resume=True, resume_overrides=given, progress=not args.quiet,
                              log=stderr_log)
    else:
        if not args.genotype:
            raise ConfigError("give a genotype to train (a name such as DARTS_V2, a genotype file or a search run "
                              "folder), or --resume RUN_DIR")
        config = make_config(args.genotype, **given)
        result = run_training(config, args.run_dir, progress=not args.quiet, log=stderr_log)
    r = result.to_dict()
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun: one summary per job, from rank 0
    lines = [f"test accuracy  {r['test_acc']:.4f}  (epoch {r['selected_epoch'] + 1}, selected: {r['selection']})",
             f"params         {r['params']:,} ({human(r['params'])}, auxiliary head excluded)",
             f"FLOPs          {r['flops']:,} ({human(r['flops'])}; {r['flops_convention']})"]
    for metric, b in r["budgets"].items():
        lines.append(f"budget         {metric}: {amount(metric, b['value'])} <= {amount(metric, b['limit'])}  "
                     f"{'ok' if b['ok'] else 'EXCEEDED'}"
                     + ("" if b["recounted"] else "  (as recorded by the search)"))
    lines.append(f"model          {r['model']}")
    emit(args, r, "\n".join(lines))
    return 0


def register(command) -> None:
    """Add the subcommand."""
    p = command("train", cmd_train, "train a genotype's deployed network from scratch (torchrun for several GPUs)")
    p.add_argument("--config", metavar="FILE", help="start from a saved config (a training run's config.json, or "
                                                    "YAML); options typed here override it")
    p.add_argument("genotype", nargs="?",
                   help="a built-in name (DARTS_V2, PC_DARTS, ...), a genotype .json/.txt file, DARTS text, or a "
                        "search run folder (its recorded network and budgets are used and re-checked)")
    p.add_argument("--dataset", help="registered dataset (default: the search run's, else the built-in digits)")
    p.add_argument("--data-dir", help="where the dataset lives")
    g = p.add_argument_group("network (defaults: the search run's recorded setting, else the dataset's published one)")
    g.add_argument("--cells", type=int, help="number of cells (CIFAR: 20, ImageNet: 14)")
    g.add_argument("--channels", type=int, help="initial channels (CIFAR: 36, ImageNet: 48)")
    g.add_argument("--image-size", type=int, help="resize the images (and the network input)")
    g.add_argument("--style", choices=("cifar", "imagenet"), help="stem style")
    g.add_argument("--no-auxiliary", dest="auxiliary", action="store_const", const=False,
                   help="train without the auxiliary head")
    add_data_mode_options(p)
    g = p.add_argument_group("recipe (defaults: the paper's; imagenet-style networks use its ImageNet recipe; "
                             "digits trains 15 short epochs)")
    g.add_argument("--epochs", type=int, help="CIFAR 600, ImageNet 250, digits 15")
    g.add_argument("--batch-size", type=int, help="GLOBAL batch over all processes (CIFAR 96, ImageNet 1024)")
    g.add_argument("--lr", type=float, help="initial learning rate, cosine to 0 (CIFAR 0.025, ImageNet 0.5)")
    g.add_argument("--momentum", type=float, help="SGD momentum (0.9)")
    g.add_argument("--weight-decay", type=float, help="CIFAR 3e-4, ImageNet 3e-5")
    g.add_argument("--grad-clip", type=float, help="gradient-norm clipping (5)")
    g.add_argument("--warmup-epochs", type=int, help="linear learning-rate warm-up (ImageNet recipe: 5 of 250 epochs, the same share of a shorter run; else 0)")
    g.add_argument("--label-smoothing", type=float, help="ImageNet 0.1, else 0")
    g.add_argument("--cutout", type=int, help="cutout square side in pixels, 0 = off (CIFAR 16)")
    g.add_argument("--drop-path", type=float, help="final drop-path probability, ramped from 0 (CIFAR 0.2)")
    g.add_argument("--aux-weight", type=float, help="auxiliary-head loss weight (0.4; 0 = no head)")
    g.add_argument("--train-subset", type=int, metavar="N",
                   help="train on N training images, class-balanced and drawn with --seed (quick studies)")
    g = p.add_argument_group("model selection")
    g.add_argument("--val-fraction", type=float, help="hold out this fraction of train to select the epoch on "
                                                      "(default 0: keep the last epoch)")
    g.add_argument("--select", choices=("last", "val", "test"),
                   help="which epoch becomes model.pt (default: val with --val-fraction, else last; "
                        "test is DARTS' practice and reports an optimistic accuracy)")
    g.add_argument("--eval-every", type=int, metavar="EPOCHS",
                   help="evaluate on val/test every EPOCHS epochs and after the last (default 1; evaluation of a "
                        "large test set can cost as much as a short epoch)")
    add_threads_option(p)
    g = p.add_argument_group("execution (these may change on --resume)")
    g.add_argument("--accum-steps", type=int, help="micro-batches per process per step (gradient accumulation); "
                                                   "BatchNorm normalises over batch/(processes x accum-steps)")
    g.add_argument("--eval-batch-size", type=int, help="batch for evaluation (500)")
    g.add_argument("--seed", type=int, help="random seed of weights, augmentation and batches (default 0)")
    g.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (smoke tests)")
    g.add_argument("--device", help="auto, cpu, cuda (under torchrun each process takes GPU LOCAL_RANK)")
    g.add_argument("--no-amp", dest="amp", action="store_const", const=False, help="no bf16 autocast on CUDA")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last (NHWC) memory format: faster on CPU and CUDA (default: on)")
    g.add_argument("--sync-bn", action="store_const", const=True,
                   help="synchronise BatchNorm statistics over processes (CUDA only)")
    p.add_argument("--run-dir", help="run folder (default: runs/<time>-train-<dataset>-<genotype>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted training run exactly")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
