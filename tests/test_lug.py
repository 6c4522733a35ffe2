"""The look-up graph: monotone fit and inverse, a real parallel build (local and Ray), resume, file checks,
`dcanas search --lug` end to end."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dcanas.cli import main
from dcanas.constraint import Budget
from dcanas.errors import DcanasError
from dcanas.lug import LUG_FORMAT, LUG_VERSION, Lug, LugError, LugPoint, build_lug, load_lug
from dcanas.search_config import SearchConfig

TINY = dict(dataset="digits", epochs=1, max_steps=2, batch_size=32)


def _synthetic_lug(xs, ys, **overrides):
    points = [LugPoint(float(x), seed, float(y), "") for seed, (x, y) in enumerate(zip(xs, ys))]
    fields = dict(dataset="digits", metric="params", setting={}, search_config={}, points=points,
                  bounds=(min(ys), max(ys)))
    return Lug(**{**fields, **overrides})


def test_fit_is_monotone_even_when_points_are_not_and_lookup_inverts_it():
    # noisy, non-monotone searches, two seeds at 300K disagreeing
    xs = [100e3, 150e3, 200e3, 250e3, 300e3, 300e3, 350e3, 400e3]
    ys = [90e3, 130e3, 120e3, 180e3, 260e3, 200e3, 215e3, 300e3]
    lug = _synthetic_lug(xs, ys)
    grid = np.linspace(xs[0], xs[-1], 400)
    fitted = lug.fitted(grid)
    assert np.all(np.diff(fitted) >= 0)
    assert np.all(np.diff(lug.knots_y) >= 0) and np.all(np.diff(lug.knots_x) > 0)
    assert lug.fitted(xs[0]) == pytest.approx(90e3) and lug.fitted(xs[-1]) == pytest.approx(300e3)
    strictly = np.r_[np.diff(fitted) > 1e-6, False] & np.r_[False, np.diff(fitted) > 1e-6]
    for x, y in zip(grid, fitted):
        k = lug.lookup(y)
        assert lug.fitted(k) <= y + 1e-6  # never searched above what the device holds
        assert lug.fitted(k) == pytest.approx(y, rel=1e-9)
        assert k >= x - 1e-6  # the largest such search budget
        if strictly[np.searchsorted(grid, x)]:
            assert k == pytest.approx(x, rel=1e-9)  # lookup(fit(x)) == x where the fit is strictly increasing
    for budget in np.linspace(90e3, 300e3, 57):
        assert lug.fitted(lug.lookup(budget)) <= budget + 1e-6
    assert lug.lookup(1e9) == xs[-1]  # clamped to the searched range at the top
    with pytest.raises(LugError, match="below the smallest derived size"):
        lug.lookup(89e3)
    assert lug.search_budgets([Budget("params", 215e3)]) == {"params": pytest.approx(lug.lookup(215e3))}
    with pytest.raises(LugError, match="maps --max-params"):
        lug.search_budgets([Budget("flops", 2e6)])
    with pytest.raises(LugError, match="two or more"):
        _synthetic_lug([1e5, 1e5], [2e5, 3e5])


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dcanas", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny real build through the CLI: 2 search budgets, 2 local worker processes."""
    run_dir = tmp_path_factory.mktemp("lug") / "build"
    out = _cli("lug", "build", "--dataset", "digits", "--search-budgets", "180K,300K", "--epochs", "1",
               "--max-steps", "2", "--batch-size", "32", "--workers", "2", "--threads", "1", "--quiet", "--json",
               "--run-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    return run_dir, json.loads(out.stdout)


def test_tiny_build_writes_a_valid_lug_and_plot(built):
    run_dir, printed = built
    assert printed["lug"] == str(run_dir / "lug.json")
    lug = load_lug(run_dir / "lug.json")
    assert (lug.dataset, lug.metric, lug.constraint) == ("digits", "params", "paper")
    assert [p.search_budget for p in lug.points] == [180e3, 300e3]
    assert lug.setting["cells"] == 8 and lug.search_config["max_steps"] == 2
    low, high = lug.bounds
    for p in lug.points:
        assert low <= p.derived <= high and p.genotype.startswith("Genotype(")
        run = json.loads((run_dir / "points" / f"params-{p.search_budget:.0f}-s0" / "result.json").read_text())
        # each point searched with the paper's k_s at K_d', device budget loose, and no repair
        assert run["config"]["constraint"] == "paper" and run["config"]["search_budgets"] == {"params": p.search_budget}
        assert run["config"]["max_params"] == high and not run["repairs"] and run["params"] == p.derived
    assert (run_dir / "lug.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "lug.png").stat().st_size > 10_000
    assert load_lug(run_dir).to_dict() == lug.to_dict()  # the run folder is accepted too


def test_ray_executor_gives_the_same_points(built, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'ray>=2.9' to test --executor ray")
    run_dir, _ = built
    local = load_lug(run_dir)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # the search options the CLI build used (digits preset included), seeds 0 as there
        lug, _ = build_lug(SearchConfig.from_dict(local.search_config), "params", [180e3, 300e3],
                           run_dir=tmp_path / "ray", executor="ray", progress=False, log=lambda m: None)
    finally:
        ray.shutdown()
    # each search is seeded and runs on one thread everywhere, so the executors agree exactly
    assert [(p.search_budget, p.derived, p.genotype) for p in lug.points] == \
           [(p.search_budget, p.derived, p.genotype) for p in local.points]


def test_interrupted_build_resumes(built, tmp_path):
    run_dir, _ = built
    copy = tmp_path / "build"
    shutil.copytree(run_dir, copy)
    first, second = sorted((copy / "points").iterdir())
    (first / "result.json").unlink()  # stopped after its last checkpoint
    for path in second.iterdir():  # stopped before its first checkpoint: only its config was written
        if path.name != "config.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (copy / "lug.json").unlink()
    lug, _ = build_lug(SearchConfig(), resume=True, run_dir=copy, workers=1, threads=1, progress=False,
                       log=lambda m: None)
    assert [(p.derived, p.genotype) for p in lug.points] == [(p.derived, p.genotype) for p in load_lug(run_dir).points]
    with pytest.raises(LugError, match="nothing to resume"):
        build_lug(SearchConfig(), resume=True, run_dir=tmp_path / "empty", progress=False)


def test_load_errors_are_one_clear_line(built, tmp_path):
    run_dir, _ = built
    good = json.loads((run_dir / "lug.json").read_text())
    cases = {"not json": ("{ truncated", "not valid JSON"),
             "foreign": (json.dumps({"normal": []}), "not a dcanas look-up graph"),
             "version": (json.dumps({**good, "version": LUG_VERSION + 1}), "format version 2"),
             "metric": (json.dumps({**good, "metric": "energy"}), "malformed"),
             "points": (json.dumps({**good, "points": [{"search_budget": "x"}]}), "malformed")}
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(DcanasError, match=message) as err:
            load_lug(path)
        assert "\n" not in str(err.value), name
    with pytest.raises(LugError, match="no look-up graph"):
        load_lug(tmp_path / "missing.json")
    assert good["format"] == LUG_FORMAT
    lug = load_lug(run_dir)
    budget = dict(max_params=float(lug.knots_y[-1]))
    lug.check_config(SearchConfig(**TINY, **budget))
    refused = {"another dataset": (SearchConfig(**{**TINY, "dataset": "synthetic"}, **budget), "dataset 'digits'"),
               "another metric": (SearchConfig(**TINY, max_flops=3e6), "maps --max-params"),
               "an extra metric": (SearchConfig(**TINY, **budget, max_flops=3e6), "maps params only"),
               "another network": (SearchConfig(**TINY, **budget, eval_channels=20), "channels 20")}
    for name, (config, message) in refused.items():
        with pytest.raises(LugError, match=message):
            lug.check_config(config)


def test_search_with_lug_end_to_end(built, tmp_path, capsys):
    run_dir, _ = built
    lug = load_lug(run_dir)
    budget = float(np.mean(lug.knots_y)) if lug.knots_y[-1] > lug.knots_y[0] else float(lug.knots_y[-1])
    out = _cli("search", "--lug", str(run_dir / "lug.json"), "--max-params", f"{budget:.0f}", "--epochs", "1",
               "--max-steps", "2", "--batch-size", "32", "--quiet", "--json", "--run-dir", str(tmp_path / "s"))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["constraint"] == "paper"
    assert config["search_budgets"]["params"] == pytest.approx(lug.lookup(round(budget)))
    assert result["budgets"]["params"]["ok"] and result["params"] <= round(budget)  # repair stays on after a LUG
    # refusals print one line and exit 2 before anything is searched (in-process: no interpreter start-up)
    (tmp_path / "bad.json").write_text("[]")
    refused = {"built for dataset 'digits'": ["--lug", str(run_dir), "--dataset", "synthetic"],
               "maps --max-params": ["--lug", str(run_dir), "--max-flops", "3M"],
               "not a dcanas look-up graph": ["--lug", str(tmp_path / "bad.json")]}
    for message, args in refused.items():
        assert main(["search", *args, "--max-steps", "1", "--run-dir", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "never").exists()


def test_local_workers_spread_over_gpus():
    from dcanas.lug import spread_over_gpus

    tasks = [{} for _ in range(5)]
    spread_over_gpus(tasks, "auto", 2)
    assert [t["device"] for t in tasks] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    for device, gpus in (("cpu", 4), ("auto", 1), ("cuda:3", 4)):  # CPU, one GPU, or a device the user chose
        tasks = [{} for _ in range(3)]
        spread_over_gpus(tasks, device, gpus)
        assert all("device" not in t for t in tasks)


def test_remote_points_are_collected_into_the_head_folder(built, tmp_path):
    """A Ray worker sends its run folder's small files back; the head writes them where it expects them."""
    from dcanas.lug import run_task, store_collected

    run_dir, _ = built
    point = sorted((run_dir / "points").iterdir())[0]
    task = {"config": json.loads((point / "config.json").read_text()), "run_dir": str(point), "threads": 1,
            "collect": True}
    answer = run_task(task)  # finished: read back, not searched again
    assert "result.json" in answer["files"] and "checkpoint.pt" not in answer["files"]
    head = tmp_path / "head" / point.name
    store_collected({**answer, "task": {**task, "run_dir": str(head)}})
    assert all((head / name).read_bytes() == data for name, data in answer["files"].items())
    before = (head / "result.json").stat().st_mtime_ns
    store_collected({**answer, "task": {**task, "run_dir": str(head)}})  # already there (shared storage): kept
    assert (head / "result.json").stat().st_mtime_ns == before


def test_negative_gpus_per_search_is_refused(tmp_path, capsys):
    from dcanas.cli import main as cli

    assert cli(["lug", "build", "--gpus-per-search", "-1", "--run-dir", str(tmp_path / "g")]) == 2
    assert "--gpus-per-search" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_memory_lug_maps_peak_budgets(tmp_path):
    """A look-up graph on peak activation memory: points are derived peaks (exact, at the deployed dtype) inside
    the deployable range, and the graph refuses other spaces."""
    run_dir = tmp_path / "mem"
    out = _cli("lug", "build", "--metric", "memory", "--deploy-dtype", "int8", "--dataset", "digits",
               "--search-budgets", "13K,60K", "--epochs", "1", "--max-steps", "2", "--batch-size", "32",
               "--workers", "1", "--threads", "1", "--quiet", "--json", "--run-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    lug = load_lug(run_dir / "lug.json")
    assert lug.metric == "memory" and lug.bounds == (12352.0, 14688.0)  # int8: a quarter of the fp32 bytes
    for p in lug.points:
        assert lug.bounds[0] <= p.derived <= lug.bounds[1]
        run = json.loads((run_dir / "points" / f"memory-{p.search_budget:.0f}-s0" / "result.json").read_text())
        assert run["config"]["deploy_dtype"] == "int8" and run["budgets"]["memory"]["value"] == p.derived
    out = _cli("lug", "build", "--metric", "memory", "--space", "nb201", "--run-dir", str(tmp_path / "nb"))
    assert out.returncode == 2 and "implemented for --space darts" in out.stderr and not (tmp_path / "nb").exists()
