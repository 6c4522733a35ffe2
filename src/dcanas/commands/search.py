"""`dcanas search`: a DCA-NAS search (or its dry run, or its resume), also under torchrun."""
from __future__ import annotations

import argparse
import os

from .common import (add_data_mode_options, add_threads_option, amount, channels_arg, emit, human, load_config_file,
                     parse_count, stderr_log)
from ..constraint import BUDGET_SCOPES
from ..report import against_random_line
from ..units import DTYPE_BYTES, readable

ORDER = 30


def search_config_from_args(args: argparse.Namespace):
    """SearchConfig from defaults, the dataset's preset, then what the user typed (in that order)."""
    from ..search_config import BUDGET_FIELDS, SearchConfig, make_search_config

    known = set(SearchConfig().to_dict()) - {"dataset"}
    given = {k: v for k, v in vars(args).items() if k in known}
    if args.no_bottleneck:
        given["bottleneck"] = 1
    base = None
    if getattr(args, "config", None):
        base = load_config_file(args.config, SearchConfig, "search")
        if args.unconstrained:
            given.update(dict.fromkeys(BUDGET_FIELDS))
    dataset = args.dataset or (base or {}).get("dataset") or "digits"
    return make_search_config(dataset, unconstrained=args.unconstrained, base=base,
                              preset=getattr(args, "preset", None), **given)


def options_given(args: argparse.Namespace) -> list[str]:
    """The search options typed on the command line (as flags), for refusing them where they cannot apply."""
    from ..search_config import SearchConfig

    known = set(SearchConfig().to_dict())
    names = [k for k, v in vars(args).items() if k in known and v is not None]
    names += [k for k in ("unconstrained", "no_bottleneck", "lug", "preset", "config") if getattr(args, k, None)]
    return sorted(names)


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume, or dry-run) a DCA-NAS search."""
    from ..errors import ConfigError
    from ..repeats import DEFAULT_SELECTION, is_repeats_dir, run_repeats
    from ..search_loop import dry_run, run_search

    if args.repeats is not None and (args.dry_run or args.resume):
        raise ConfigError("--repeats starts a new set of searches; --resume RUN_DIR continues one as it was "
                          "started, and --dry-run runs none")
    if args.repeat_jobs is not None and args.repeats is None and not (args.resume and is_repeats_dir(args.resume)):
        raise ConfigError("--repeat-jobs sets how many searches of --repeats N run at once; give --repeats too")
    if args.repeat_select is not None and args.repeats is None:
        raise ConfigError("--repeat-select chooses how --repeats N makes one network of N searches; give --repeats "
                          "too (a resumed set keeps the selection it was started with)")
    if args.resume and is_repeats_dir(args.resume) and not options_given(args):
        r = run_repeats(None, run_dir=args.resume, resume=True, jobs=args.repeat_jobs, log=stderr_log,
                        progress=not args.quiet)
        return print_search_result(args, r)
    if args.resume:
        given = options_given(args)
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ConfigError(f"--resume continues the search exactly as it was started, so it takes no search "
                              f"options (got {flags}); start a new run to change them")
        result = run_search(None, args.resume, resume=True, progress=not args.quiet, log=stderr_log)
    else:
        config = search_config_from_args(args)
        if args.lug:
            from ..lug import load_lug

            lug = load_lug(args.lug)
            lug.check_config(config, log=stderr_log)  # refuse another dataset/metric/network before searching
            config.search_budgets = lug.search_budgets(config.budgets())
            config.constraint = lug.constraint
        if args.dry_run:
            info = dry_run(config)
            if not _is_rank_0():
                return 0
            lines = [f"supernet weights  {info['supernet_weights']:,}",
                     f"deployed network  {info['setting']}"]
            for metric, b in info["deployable"].items():
                lines.append(f"deployable {metric:7} {readable(b['min'])} .. {readable(b['max'])}")
            emit(args, info, "\n".join(lines))
            return 0
        if args.repeats is not None:
            r = run_repeats(config, args.repeats, args.run_dir, jobs=args.repeat_jobs,
                            select=args.repeat_select or DEFAULT_SELECTION, log=stderr_log, progress=not args.quiet)
            return print_search_result(args, r)
        result = run_search(config, args.run_dir, progress=not args.quiet, log=stderr_log)
    if not _is_rank_0():
        return 0  # under torchrun: one summary per job, from rank 0
    return print_search_result(args, result.to_dict())


def print_search_result(args: argparse.Namespace, r: dict) -> int:
    """The search's summary: genotype, sizes, budgets, repairs, and (with --repeats) every seed's score."""
    setting = r.get("setting") or {}
    lines = [f"genotype  {r['genotype']}"]
    if "channels" in setting:
        cells = setting.get("cells", 3 * setting.get("cells_per_stage", 0) or "?")  # NB201: 3 stages of N
        lines.append(f"network   {cells} cells x {setting['channels']} channels "
                     f"({setting.get('in_channels', '?')}x{setting.get('image_size', '?')}x"
                     f"{setting.get('image_size', '?')} input, {setting.get('num_classes', '?')} classes)")
    lines.append(f"params    {r['params']:,} ({human(r['params'])})   FLOPs {r['flops']:,} ({human(r['flops'])})")
    for metric, b in r["budgets"].items():
        lines.append(f"budget    {metric}: {amount(metric, b['value'])} <= {amount(metric, b['limit'])}  "
                     f"{'ok' if b['ok'] else 'EXCEEDED'}")
    if r["repairs"]:
        lines.append(f"repaired  {len(r['repairs'])} op(s) replaced to meet the budget (see report.md)")
    lines += [f"note      {note}" for note in r.get("notes", [])]
    if r.get("rerank"):
        from ..proxies import proxy_ranks

        chosen = next(c for c in r["rerank"]["candidates"] if c.get("chosen"))
        ranks = "".join(f", {name}'s no. {rank}" for name, rank in proxy_ranks(chosen, r["rerank"]["proxy"]).items())
        if ranks:
            lines.append(f"reranked  by {r['rerank']['proxy']}: the alphas' choice no. {chosen['alpha_rank']} of "
                         f"{len(r['rerank']['candidates'])}{ranks} (--rerank none: the alphas alone)")
        else:  # --rerank budget with no budget: no voter beside the alphas
            lines.append(f"reranked  by {r['rerank']['proxy']}: nothing voted (no budget to share); the alphas' "
                         f"choice no. 1 kept")
    for run in r.get("repeats", []):
        mark = "  <- kept" if run["seed"] == r["selected_seed"] else ""
        lines.append(f"seed {run['seed']:<4} one-shot val acc {run['derived_val_acc']:.4f}  {run['genotype']}{mark}")
    if r.get("selection") == "consensus":
        lines.append(f"consensus of {len(r['repeats'])} searches: the genotype above comes from their averaged "
                     f"mixing weights (report.md)")
    accuracy = (r.get("benchmark") or {}).get("test_accuracy") or {}
    if accuracy:  # NB201: the benchmark's truth for the architecture found
        lines.append("benchmark test accuracy " + ", ".join(f"{d} {v:.2f} %" for d, v in accuracy.items()))
        standing = against_random_line(r["benchmark"])
        if standing:
            lines.append(f"          {standing}")
    lines.append(f"run dir   {r['run_dir']}")
    if r.get("space", "darts") == "darts":
        lines.append(f"next      dcanas train {r['run_dir']}   (train the network found; add --epochs 2 for a "
                     f"quick check)")
    emit(args, r, "\n".join(lines))
    return 0


def _is_rank_0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def add_search_options(p: argparse.ArgumentParser, *, for_lug: bool = False) -> None:
    """The options of one search, declared once: `dcanas search` and each search of `dcanas lug build`."""
    p.add_argument("--space", choices=("darts", "nb201"), help="search space (default: darts)")
    p.add_argument("--dataset", help="registered dataset (default: the built-in digits)")
    p.add_argument("--preset", choices=("imagenet",),
                   help="imagenet: the paper's ImageNet search (stride-8 supernet stem, 14x48 deployed network, lr "
                        "0.5 and alpha lr 6e-3 at batch 1024, scaled to --batch-size); options typed override it")
    p.add_argument("--data-dir", help="where the dataset lives")
    p.add_argument("--download", action="store_const", const=True,
                   help="fetch cifar10/cifar100/mnist/fashion-mnist into --data-dir (checksummed)")
    p.add_argument("--image-size", type=int, dest="image_size", help="resize images (imagefolder)")
    add_data_mode_options(p)
    g = p.add_argument_group("deployed evaluation network (defaults: the dataset's published setting)")
    g.add_argument("--cells", type=int, dest="eval_cells", help="cells of the deployed network")
    g.add_argument("--channels", type=channels_arg, dest="eval_channels",
                   help="initial channels of the deployed network, or 'auto' (widest that fits the budget well)")
    g.add_argument("--deploy-dtype", choices=tuple(DTYPE_BYTES),
                   help="dtype the deployed network runs in: what --max-model-bytes and --max-memory count in "
                        "(default float32)")
    g = p.add_argument_group("supernet and search-time savings")
    g.add_argument("--search-cells", type=int, dest="cells", help="supernet cells (default 8)")
    g.add_argument("--search-channels", type=int, dest="channels", help="supernet channels (default 16)")
    g.add_argument("--bottleneck", type=int, help="channel bottleneck factor k (default 4)")
    g.add_argument("--no-bottleneck", action="store_true", help="candidate ops run on all channels")
    g.add_argument("--no-weight-sharing", dest="weight_sharing", action="store_const", const=False,
                   help="one op per edge instead of one per (node, op) pair (the paper's second saving off)")
    g.add_argument("--no-derived-cells", dest="derived_cells", action="store_const", const=False,
                   help="keep the full supernet cell everywhere (the paper's third saving off)")
    g.add_argument("--max-skips", type=int, help="DARTS: keep at most this many skip connections in the derived "
                                                 "normal cell (P-DARTS uses 2; default: no cap)")
    g.add_argument("--reduce-cell", metavar="GENOTYPE",
                   help="DARTS: fix every reduction cell to this named genotype's (e.g. DARTS_V2: pooling) and "
                        "search only the normal cell, so the budget is spent there (GDAS's fixed reduction cell)")
    g.add_argument("--partial-channels", type=int, help="NB201, PC-DARTS: only 1/K of each edge's channels enter "
                                                        "its mixed ops (needs --no-weight-sharing; default 1 = off)")
    g.add_argument("--edge-norm", action="store_const", const=True, help="NB201, PC-DARTS: edge normalisation")
    g.add_argument("--remedy", help="against collapse onto skip/pool: beta-decay (beta-DARTS, the default), "
                                    "dirichlet (DrNAS) or none (plain softmax, as the paper); see docs/design.md")
    g.add_argument("--beta-weight", type=float, help="beta-decay: final regulariser weight, ramped from 0 (default 5)")
    g.add_argument("--alpha-noise", type=float, metavar="EPS",
                   help="SDARTS random smoothing (with any remedy): weight steps see mixing weights moved by uniform "
                        "noise in [-eps, eps], eps ramped from eps/10 (SDARTS: 0.3); default 0 = off")
    g.add_argument("--train-subset", type=int, help="search on this many training images (class-balanced)")
    g.add_argument("--search-stem", choices=("cifar", "imagenet"),
                   help="the supernet's stem: imagenet = three stride-2 convolutions before the cells (224 px -> 28), "
                        "as the paper's ImageNet search (default: the deployed network's style)")
    g.add_argument("--search-image-size", type=int,
                   help="the supernet sees images resized to this many pixels (budgets stay about the full size)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="search epochs (paper: 50; digits preset 15)")
    g.add_argument("--batch-size", type=int, help="GLOBAL batch over all processes (torchrun)")
    g.add_argument("--lr", type=float, help="weight learning rate (cosine to 0)")
    g.add_argument("--arch-lr", type=float, help="alpha learning rate (Adam)")
    g.add_argument("--lambda-lr", type=float, help="multiplier step size")
    g.add_argument("--warmup-epochs", type=float,
                   help="train only the weights this many epochs before alphas and multipliers move (default 0, "
                        "as the paper; PC-DARTS uses 15 of 50; fractions allowed)")
    if not for_lug:  # a look-up graph takes --seeds, one list for all its searches
        g.add_argument("--seed", type=int, help="random seed of weights, alphas and batches (default 0)")
    g.add_argument("--max-steps", type=int, help="stop after this many search steps")
    g.add_argument("--accum-steps", type=int, help="micro-batches per process per step (gradient accumulation); "
                                                   "BatchNorm normalises over batch/(processes x accum-steps)")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (under torchrun each process takes GPU LOCAL_RANK)")


def register(command) -> None:
    """Add the subcommand."""
    p = command("search", cmd_search, "search the network that fits the device budget (DCA-NAS)")
    add_search_options(p)
    g = p.add_argument_group("budgets of the deployed network (K, M, G suffixes allowed)")
    g.add_argument("--max-params", type=parse_count, help="parameters, auxiliary head excluded")
    g.add_argument("--max-model-bytes", type=parse_count,
                   help="bytes of the deployed weights at --deploy-dtype (a params budget: bytes / bytes per value)")
    g.add_argument("--max-memory", type=parse_count,
                   help="peak activation bytes of one inference at batch 1 at --deploy-dtype, input image included "
                        "(darts space; `dcanas count --json` shows a network's)")
    g.add_argument("--max-flops", type=parse_count, help="multiply-accumulates at batch 1")
    g.add_argument("--max-latency", type=float, help="milliseconds, from --latency-table")
    g.add_argument("--latency-table", help="DARTS: per-op latency table from `dcanas profile --ops`")
    g.add_argument("--latency-device", help="NB201: a device of the benchmark's latency tables (pixel3, raspi4, ...)")
    g.add_argument("--bench-table", help="NB201: benchmark table (CSV or HW-NAS-Bench pickle)")
    g.add_argument("--unconstrained", action="store_true", help="no budget (plain DARTS-style search)")
    g.add_argument("--constraint", choices=("derived", "paper"),
                   help="cost estimate: exact derived network (default) or the paper's eq. 3")
    g.add_argument("--penalty-step", choices=("sgd", "adam"),
                   help="how the budget's gradient moves alpha: a plain step scaled by the multiplier (sgd, the "
                        "default) or inside Adam's normalised step (adam, which flips whole cells at once)")
    g.add_argument("--penalty-lr", type=float, help="step size of the sgd penalty step (default 1.0)")
    g.add_argument("--fill-budget", action=argparse.BooleanOptionalAction, default=None,
                   help="after the search, upgrade ops to the costlier convolutions the alphas rank next while "
                        "every budget still holds (default: on for nb201, off for darts)")
    g.add_argument("--rerank", metavar="PROXY",
                   help="land the architecture with the best sum of its rank by the alphas and its rank by a "
                        "zero-cost proxy of the deployed network (synflow, naswot, meco; several joined by '+' add "
                        "their ranks; budget votes for the share of the budget used and, with the fill, widens the "
                        "candidates to the whole 85-100 %% band, where darts always lists: nb201's default "
                        "synflow+meco+budget), among the alphas' --rerank-top best in the budget (darts: a beam over the node choices lists them); none: the "
                        "alphas alone (the default for darts)")
    g.add_argument("--rerank-top", type=int, help="how many of the alphas' best landings --rerank ranks (default "
                                                  "500; each costs one proxy evaluation)")
    g.add_argument("--derive-by", metavar="HOW",
                   help="how the architecture is read off the finished supernet: alphas (each edge's largest alpha, "
                        "DARTS; the default) or perturbation (the op, and in darts each node's inputs, whose removal "
                        "costs the supernet most accuracy on held-out images: DARTS-PT without its fine-tuning)")
    g.add_argument("--derive-images", type=int, help="held-out images --derive-by perturbation scores on (default "
                                                     "1024; one evaluation per op and edge)")
    g.add_argument("--budget-floor", type=float,
                   help="also push the derived network up to this fraction of each budget (e.g. 0.9): unused "
                        "budget is lost accuracy")
    g.add_argument("--budget-scope", choices=BUDGET_SCOPES,
                   help="which ops the budget's gradient may favour: any cheaper op (all, the paper's) or only "
                        "cheaper convolutions, unless the budget needs parameter-free ops (parametric); or search "
                        "without the budget and land the alphas' best architecture inside it (landing)")
    g.add_argument("--lug", help="look-up graph JSON: maps the device budget to the search budget")
    g.add_argument("--no-repair", dest="repair", action="store_const", const=False,
                   help="do not repair a derived network that exceeds a budget")
    add_threads_option(p)
    p.add_argument("--config", metavar="FILE", help="start from a saved config (a run's config.json, or YAML); "
                                                    "options typed here override it")
    p.add_argument("--run-dir", help="run folder (default: runs/<time>-<dataset>-<budget>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted search exactly")
    p.add_argument("--dry-run", action="store_true", help="build everything, print sizes, and exit")
    p.add_argument("--repeats", type=int, help="run this many searches (seeds seed, seed+1, ...) and make one "
                                               "network of them (--repeat-select)")
    from ..repeats import SELECTIONS

    p.add_argument("--repeat-select", choices=SELECTIONS,
                   help="consensus (default): derive from every edge's mixing weights averaged over the searches; "
                        "one-shot: keep the search whose network the supernet scores best on validation (the "
                        "paper's rule)")
    p.add_argument("--repeat-jobs", type=int, help="searches of --repeats at a time (default: one per CPU core; "
                                                   "1 on a GPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
