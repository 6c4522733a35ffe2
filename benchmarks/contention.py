"""Wall time of the README's main job when other work shares the CPU: today's thread policy vs the new one.

    python benchmarks/contention.py --max-steps 60

Each row runs `dcanas search` (the built-in digits set and its default budget, stopped after
--max-steps) in a fresh process, under one thread policy and one scenario:

- alone;
- (a) beside two single-threaded CPU-bound processes (a loaded laptop);
- (b) beside a second `dcanas search` with the same settings, started just before and still running;
- (c) the same pair the other way round: the measured search starts first, the second 3 s later (a
  thread count chosen at start cannot see work that arrives afterwards).

Policies: "all cores" is what dcanas did before `threads.py` (torch's default: one OpenMP thread per
core, DCANAS_THREADS=<cores> reproduces it); "default" is the policy now shipped (no variable set);
"free cores" (DCANAS_THREADS=free) takes the cores idle at start whatever the input size; "all cores,
passive" is "all cores" with OpenMP's idle threads sleeping instead of spinning (OMP_WAIT_POLICY=PASSIVE).
Every ratio is against the same policy alone, measured in this run. `--dataset synthetic` runs the
same on CIFAR-size (32x32x3) images instead, where the default uses the free cores at start.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dcanas.threads import available_cores

BUSY_LOOP = "while True: pass"


def search_command(run_dir: Path, dataset: str, max_steps: int) -> list[str]:
    """The measured job: `dcanas search` with default settings, stopped early."""
    cmd = [sys.executable, "-m", "dcanas", "search", "--quiet", "--run-dir", str(run_dir), "--max-steps", str(max_steps)]
    if dataset != "digits":
        cmd += ["--dataset", dataset, "--epochs", "1", "--unconstrained"]
    return cmd


def policy_env(policy: str) -> dict[str, str]:
    """The environment that selects a thread policy (the user's own thread variables removed)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DCANAS_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    if policy in ("all cores", "all cores, passive"):
        env["DCANAS_THREADS"] = str(available_cores())
    if policy == "all cores, passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy == "free cores":
        env["DCANAS_THREADS"] = "free"
    return env


def timed_search(workdir: Path, name: str, env: dict[str, str], dataset: str, max_steps: int) -> float:
    """Seconds of wall time of one search process."""
    t0 = time.perf_counter()
    subprocess.run(search_command(workdir / name, dataset, max_steps), env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure(workdir: Path, policy: str, scenario: str, dataset: str, max_steps: int, tag: str) -> float:
    """Run the measured search under `scenario`, starting and stopping the competing load around it."""
    env = policy_env(policy)
    load: list[subprocess.Popen] = []
    if scenario == "beside 2 busy processes":
        load = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(2)]
    elif scenario == "beside a 2nd search":
        # long enough to outlast the measured one; same settings and policy
        load = [subprocess.Popen(search_command(workdir / f"other-{tag}", dataset, max_steps * 10), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        if scenario == "2nd search starts after it":
            t0 = time.perf_counter()
            measured = subprocess.Popen(search_command(workdir / f"run-{tag}", dataset, max_steps), env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(3.0)
            load.append(subprocess.Popen(search_command(workdir / f"other-{tag}", dataset, max_steps * 10),
                                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if measured.wait() != 0:
                raise RuntimeError("the measured search failed")
            return time.perf_counter() - t0
        if load:
            time.sleep(3.0)  # let the load start (the other search loads its data first)
        return timed_search(workdir, f"run-{tag}", env, dataset, max_steps)
    finally:
        for p in load:
            p.kill()
            p.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--dataset", default="digits", choices=("digits", "synthetic"))
    p.add_argument("--policies", nargs="+", default=["all cores", "default", "free cores"])
    args = p.parse_args()
    scenarios = ["alone", "beside 2 busy processes", "beside a 2nd search", "2nd search starts after it"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy in args.policies:
            alone = None
            for i, scenario in enumerate(scenarios):
                seconds = measure(Path(tmp), policy, scenario, args.dataset, args.max_steps,
                                  f"{policy.replace(' ', '_')}-{i}")
                alone = seconds if scenario == "alone" else alone
                rows.append((policy, scenario, seconds, seconds / alone))
                print(f"{policy:10} {scenario:24} {seconds:7.1f} s  {seconds / alone:4.2f}x alone", file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"\n`dcanas search --max-steps {args.max_steps}` on {args.dataset}, {available_cores()} cores, "
          f"1-min load {load:.1f} at the end\n")
    print("| thread policy | scenario | wall s | x its time alone |")
    print("|---|---|---|---|")
    for policy, scenario, seconds, ratio in rows:
        print(f"| {policy} | {scenario} | {seconds:.1f} | {ratio:.2f}x |")
    base = {s: t for pol, s, t, _ in rows if pol == "all cores"}
    if base:
        print("\n| thread policy | scenario | speed-up vs all cores |")
        print("|---|---|---|")
        for policy, scenario, seconds, _ in rows:
            if policy != "all cores":
                print(f"| {policy} | {scenario} | {base[scenario] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
