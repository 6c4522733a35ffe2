"""Search step side by side with NNI 3.0's DARTS: seconds per step, peak memory and supernet weights.

    python benchmarks/nni_side_by_side.py --batch 32 64 --steps 2 --warmup 1 --repeats 2

NNI runs in its own virtual environment (default .bench/nni-venv, made with --system-site-packages so
that it uses this interpreter's torch; nni==3.0 and pytorch-lightning are installed there on the first
run). For each batch size and repeat the script measures, alternately, dcanas plain DARTS (all savings
off), NNI 3.0's DARTS and dcanas with all savings on, each in a fresh subprocess with one torch thread,
on 32x32x3 random inputs and 10 classes. A step is one architecture step plus one weight step,
first-order. Ours is `benchmarks/search_step.py`'s measurement; NNI's is its `DARTS` model space
(width 16, 8 cells, CIFAR stem) mutated by its first-order `DARTS` strategy and trained by Lightning,
with a callback timing each training batch (arch step + weight step). Memory is each process's peak
RSS above its interpreter's after imports. Writes benchmarks/results/nni_side_by_side.md (notes below
its marker are kept) and, with --plot, a PNG.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark scripts, reused by import
# search_step imports only the standard library at module level: safe to import in NNI's venv too
from common import CONFIGS, peak_rss_mb
from search_step import worker as ours_worker

ROOT = Path(__file__).resolve().parents[1]
NNI = "NNI 3.0 DARTS (first-order)"
OURS_DEFAULT = ["plain DARTS (all savings off)", "+ derived cells (all on)"]
# pins that import and run together on Python 3.11 with torch 2.13 (found by trying, 2026-11-28);
# torch itself is pinned to this interpreter's version so pip never fetches another (CUDA) build
NNI_PINS = ["nni==3.0", "pytorch-lightning==2.6.6", "torchmetrics==1.9.0"]


def ours_weights(name: str) -> int:
    """Trainable supernet weights (alphas excluded) of one of search_step's configurations."""
    from dcanas.search_config import SearchConfig
    from dcanas.search_loop import build_supernet

    spec = {k: v for k, v in CONFIGS[name].items() if k != "constraint"}
    return sum(p.numel() for p in build_supernet(SearchConfig(**spec, amp=False), 3, 10).weight_parameters())


def nni_worker(batch: int, steps: int, warmup: int, lr: float, momentum: float, weight_decay: float,
               arch_lr: float, grad_clip: float) -> dict:
    """Run NNI's first-order DARTS strategy for warmup + steps batches under Lightning; time the last `steps`."""
    import warnings

    warnings.filterwarnings("ignore")  # NNI 3.0 warns about every torch.nn class it does not know
    import nni
    import pytorch_lightning as pl
    import torch
    from nni.nas.evaluator.pytorch import (
        ClassificationModule,
        DataLoader,
        Lightning,
        Trainer,
    )
    from nni.nas.hub.pytorch import DARTS as DartsSpace
    from nni.nas.strategy import DARTS as DartsStrategy
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    base_mb = peak_rss_mb()

    @nni.trace
    class SGDClassification(ClassificationModule):
        """NNI's classification module with DARTS's SGD with momentum, as NNI's DARTS tutorial does."""

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate, momentum=momentum,
                                   weight_decay=self.hparams.weight_decay)

    class StepTimer(pl.Callback):
        """Wall time of each training batch: NNI's arch step + weight step, data loading excluded."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._t0 = 0.0

        def on_train_batch_start(self, *args: object) -> None:
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, *args: object) -> None:
            self.seconds.append(time.perf_counter() - self._t0)

    n = (warmup + steps) * batch
    data = TensorDataset(torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,)))
    timer = StepTimer()
    # limit_train_batches, not max_steps: with manual optimisation Lightning counts both optimisers' steps
    trainer = Trainer(max_epochs=1, limit_train_batches=warmup + steps, accelerator="cpu", devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, callbacks=[timer])
    evaluator = Lightning(SGDClassification(learning_rate=lr, weight_decay=weight_decay, export_onnx=False,
                                            num_classes=10),
                          trainer, train_dataloaders=DataLoader(data, batch_size=batch),
                          val_dataloaders=DataLoader(data, batch_size=batch))
    strategy = DartsStrategy(arc_learning_rate=arch_lr, gradient_clip_val=grad_clip)
    # what strategy.run() does inside an NNI experiment, minus the experiment manager (no web server)
    supernet = strategy.mutate_model(DartsSpace(width=16, num_cells=8, dataset="cifar"))
    oneshot = strategy.mutate_evaluator(evaluator)
    oneshot.module.set_model(supernet)
    alphas = set(oneshot.module.arch_parameters())
    weights = sum(p.numel() for p in supernet.parameters() if p not in alphas)
    oneshot.evaluate(supernet)
    if len(timer.seconds) != warmup + steps:
        raise RuntimeError(f"NNI ran {len(timer.seconds)} batches, expected {warmup + steps}")
    return {"config": NNI, "batch": batch, "seconds_per_step": sum(timer.seconds[warmup:]) / steps,
            "peak_mb": peak_rss_mb() - base_mb, "weights": weights, "alphas": sum(p.numel() for p in alphas),
            "versions": {"nni": nni.__version__, "pytorch_lightning": pl.__version__, "torch": torch.__version__}}


def run_pip(python: Path, args: list[str]) -> subprocess.CompletedProcess:
    """pip of the given interpreter, output captured."""
    return subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, check=False)


def last_error(stderr: str) -> str:
    """The line of a failed command's stderr that says what failed (pip also prints warnings after it)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()] or ["(no output)"]
    return next((line for line in reversed(lines) if "Error" in line or "ERROR" in line), lines[-1]).strip()


def ensure_nni_venv(venv: Path) -> Path:
    """Make the venv and install NNI 3.0 there unless it already imports; return its python."""
    from importlib.metadata import version

    python = venv / "bin" / "python"
    probe_cmd = [str(python), "-c", "import nni, pytorch_lightning; assert nni.__version__ == '3.0', nni.__version__"]
    if python.exists() and subprocess.run(probe_cmd, capture_output=True, check=False).returncode == 0:
        return python
    if not python.exists():
        # system site packages: NNI uses this interpreter's torch (CPU build) instead of downloading one
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    torch_pin = "torch==" + version("torch").split("+")[0]
    print(f"installing {' '.join(NNI_PINS)} into {venv} ...", file=sys.stderr)
    out = run_pip(python, [*NNI_PINS, torch_pin])
    if out.returncode:
        sys.exit(f"nni_side_by_side: could not install {' '.join(NNI_PINS)} into {venv}: {last_error(out.stderr)}")
    probe = subprocess.run(probe_cmd, capture_output=True, text=True, check=False)
    if probe.returncode:
        sys.exit(f"nni_side_by_side: NNI 3.0 installed but does not import with torch {version('torch')}: "
                 f"{last_error(probe.stderr)}")
    return python


def measure(python: Path | str, tool: str, batch: int, args: argparse.Namespace) -> dict:
    """One measurement in a fresh subprocess (so its peak RSS is its own)."""
    cmd = [str(python), __file__, "--worker", tool, "--batch", str(batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, check=False)
    if out.returncode:
        sys.exit(f"nni_side_by_side: {tool} at batch {batch} failed: {last_error(out.stderr)}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict], weights: dict[str, int]) -> list[dict]:
    """One row per (batch, tool): median s/step over repeats, max peak memory, speed-up vs NNI."""
    rows = []
    for batch in dict.fromkeys(r["batch"] for r in runs):
        group = [r for r in runs if r["batch"] == batch]
        for tool in dict.fromkeys(r["config"] for r in group):
            mine = [r for r in group if r["config"] == tool]
            secs = [r["seconds_per_step"] for r in mine]
            label = tool if tool == NNI else f"dcanas: {tool}"
            rows.append({"batch": batch, "tool": label, "seconds_per_step": statistics.median(secs),
                         "seconds_each": secs, "peak_mb": max(r["peak_mb"] for r in mine),
                         "weights": weights[tool]})
        nni_s = next(r["seconds_per_step"] for r in rows if r["batch"] == batch and r["tool"] == NNI)
        for r in rows:
            if r["batch"] == batch:
                r["speedup_vs_nni"] = nni_s / r["seconds_per_step"]
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of the summary rows."""
    lines = ["| batch | tool | s/step | speed-up vs NNI | peak MiB | supernet weights |", "|---|---|---|---|---|---|"]
    for r in rows:
        each = ", ".join(f"{s:.2f}" for s in r["seconds_each"])
        lines.append(f"| {r['batch']} | {r['tool']} | {r['seconds_per_step']:.3f} ({each}) | "
                     f"{r['speedup_vs_nni']:.2f}x | {r['peak_mb']:.0f} | {r['weights']:,} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, threads: int) -> None:
    """Grouped bars: s/step and peak GiB per batch size and tool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = list(dict.fromkeys(r["batch"] for r in rows))
    tools = list(dict.fromkeys(r["tool"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8))
    width = 0.8 / len(tools)
    for ax, key, scale, label in ((axes[0], "seconds_per_step", 1.0, "seconds per search step"),
                                  (axes[1], "peak_mb", 1 / 1024, "peak RSS above interpreter (GiB)")):
        for k, tool in enumerate(tools):
            values = [next(r[key] for r in rows if r["batch"] == b and r["tool"] == tool) * scale for b in batches]
            bars = ax.bar([i + (k - (len(tools) - 1) / 2) * width for i in range(len(batches))], values, width,
                          label=tool, color=f"C{k}")
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(tools), fontsize=7)
    fig.suptitle(f"DARTS search step on CPU ({threads} torch thread(s)), 8 cells x 16 channels, 32x32 input",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_markdown(path: Path, rows: list[dict], nni_run: dict, command: str, info: str, wall: float,
                   args: argparse.Namespace) -> None:
    """Results file: command, machine, table, what was timed; hand-written notes below the marker survive."""
    from common import NOTES

    from dcanas.search_config import SearchConfig

    c = SearchConfig()
    notes = ""
    if path.is_file() and NOTES in path.read_text():
        notes = path.read_text().split(NOTES, 1)[1]
    v = nni_run["versions"]
    image = ""
    if args.plot:
        image = f"\n![side by side]({os.path.relpath(args.plot, path.parent)})\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""# Search step side by side with NNI 3.0's DARTS

Command: `{command}` (from the repository root; {wall / 60:.1f} min wall).

Machine: {info}. NNI venv: nni {v['nni']}, pytorch-lightning {v['pytorch_lightning']}, torch {v['torch']}
(the same install, through `--system-site-packages`).

Each cell is the median over {args.repeats} alternating repeats (each repeat's value in brackets) of
{args.steps} timed steps after {args.warmup} warm-up step(s), every measurement in a fresh process with
{args.threads} torch thread(s); peak MiB is the largest peak RSS above the interpreter's (after imports)
over the repeats. "speed-up vs NNI" = NNI's s/step / the row's s/step. "supernet weights" excludes the
architecture parameters ({nni_run['alphas']} alphas in NNI, 224 in ours).

{table(rows)}
{image}
What was timed:

- **ours**: `benchmarks/search_step.py`'s worker (imported): `BilevelStep.alpha_step` (Adam on the
  alphas, gradient of the validation loss w.r.t. the alphas only) then `BilevelStep.weight_step` (SGD
  momentum {c.momentum}, weight decay {c.weight_decay:g}, gradient clipping {c.grad_clip:g}) on the same 32x32x3
  random batch (`SearchConfig` defaults: lr {c.lr:g}, arch lr {c.arch_lr:g}).
- **NNI**: `nni.nas.hub.pytorch.DARTS(width=16, num_cells=8, dataset="cifar")` mutated by
  `nni.nas.strategy.DARTS(gradient_clip_val={c.grad_clip:g})` (NNI 3.0's DARTS is first-order only) through
  `strategy.mutate_model` / `mutate_evaluator` — what `strategy.run()` does, without the experiment
  manager — and trained by `Lightning.evaluate` with a `ClassificationModule` whose optimiser is SGD
  with momentum (as in NNI's DARTS tutorial; the same settings as ours). A Lightning callback
  times `on_train_batch_start` to `on_train_batch_end`: NNI's `DartsLightningModule.training_step`
  (Adam arch step on the "val" batch, then SGD weight step on the "train" batch; the arch optimiser has
  the same betas (0.5, 0.999) and weight decay 1e-3 as ours) plus Lightning's per-batch hooks and
  metric logging; loading the batch is outside the window. Random data in a `TensorDataset`, the same
  tensors for "train" and "val".

Differences in the supernets that the figures include:

- NNI's candidate-op BatchNorms are affine (trainable scale and shift); DARTS's search code, and
  ours, use `affine=False` in the supernet. That is all of NNI's extra weights, and plain DARTS here
  has exactly DARTS's 1,930,618.
- NNI's pooling candidates have no BatchNorm after them (DARTS's search code adds one).
- NNI's arch step back-propagates the full graph (`manual_backward`), computing weight gradients it
  then discards; ours takes the gradient w.r.t. the alphas only. That is the implementation's cost, and
  is part of what is compared.

{NOTES}{notes}""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64], help="batch sizes (default 32 64)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="alternations per batch size (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measurement (default 1)")
    parser.add_argument("--ours", nargs="+", default=OURS_DEFAULT, choices=[n for n in CONFIGS if "child" not in n],
                        metavar="CONFIG", help=f"search_step configurations to compare (default: {OURS_DEFAULT})")
    parser.add_argument("--venv", type=Path, default=ROOT / ".bench" / "nni-venv",
                        help="virtual environment for NNI, made if missing (default .bench/nni-venv)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "nni_side_by_side.md",
                        help="markdown results file to write ('' to skip)")
    parser.add_argument("--plot", type=Path, help="also draw the figures to this PNG (e.g. docs/nni_side_by_side.png)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)  # one thread: this shared machine gives 10-20x noise with two
        if args.worker == NNI:
            # search_step's optimiser settings are SearchConfig's defaults; NNI's venv sees dcanas too
            from dcanas.search_config import SearchConfig

            c = SearchConfig()
            result = nni_worker(args.batch[0], args.steps, args.warmup, c.lr, c.momentum, c.weight_decay, c.arch_lr,
                                c.grad_clip)
        else:
            result = ours_worker(args.worker, args.batch[0], args.steps, args.warmup, "cpu")
        print(json.dumps(result))
        return
    started = time.time()
    python = ensure_nni_venv(args.venv)
    from common import machine

    info = machine()  # load at start: the shared machine's other work shows in the figures
    runs: list[dict] = []
    order = [args.ours[0], NNI, *args.ours[1:]]  # NNI between ours: drifting load hits both sides
    for batch in args.batch:
        for repeat in range(args.repeats):
            for tool in order:
                runs.append(measure(python if tool == NNI else sys.executable, tool, batch, args))
                if not args.json:
                    print(f"  {tool} @ batch {batch} (repeat {repeat + 1}): {runs[-1]['seconds_per_step']:.3f} s/step, "
                          f"{runs[-1]['peak_mb']:.0f} MiB", file=sys.stderr)
    nni_run = next(r for r in runs if r["config"] == NNI)
    weights = {NNI: nni_run["weights"], **{name: ours_weights(name) for name in args.ours}}
    rows = summarise(runs, weights)
    command = "python benchmarks/nni_side_by_side.py " + " ".join(sys.argv[1:])
    if args.plot:
        plot(rows, args.plot, args.threads)
    if str(args.out) not in ("", "."):
        write_markdown(args.out, rows, nni_run, command.strip(), info, time.time() - started, args)
    if args.json:
        print(json.dumps({"machine": info, "nni_versions": nni_run["versions"], "steps": args.steps,
                          "warmup": args.warmup, "repeats": args.repeats, "rows": rows, "runs": runs}))
        return
    print(f"\n{info}; nni {nni_run['versions']['nni']}, pytorch-lightning {nni_run['versions']['pytorch_lightning']}")
    print(table(rows))


if __name__ == "__main__":
    main()
