"""Export (ONNX, TorchScript) verified against PyTorch; latency profiling; per-op latency tables and --max-latency."""
import json

import numpy as np
import pytest
import torch

from dcanas.cli import main
from dcanas.spaces.darts.cost import build_cost_table
from dcanas.errors import BudgetError, DcanasError
from dcanas.export import export_onnx, export_torchscript, opset_range
from dcanas.spaces.darts.latency import attach_latency_table, load_latency_table
from dcanas.model_io import save_model
from dcanas.search_config import SearchConfig
from dcanas.search_loop import run_search
from dcanas.spaces.darts.genotype import GENOTYPES
from dcanas.spaces.darts.network import EvalNetwork, eval_setting_for
from dcanas.spaces.darts.ops import PRIMITIVES

ort = pytest.importorskip("onnxruntime", reason="export and profile need onnxruntime: pip install -e .[export]")

TINY = {"cells": 5, "channels": 8}  # digits: 1x8x8 input, 10 classes
TORCHSCRIPT_MAX_OPSET = opset_range("torchscript")[1]



def trained_like_net() -> EvalNetwork:
    """DARTS_V2 on digits with non-trivial BatchNorm statistics, as a trained net has (eval mode must use them)."""
    torch.manual_seed(0)
    net = EvalNetwork(GENOTYPES.get("DARTS_V2"), eval_setting_for("digits", **TINY))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    net.drop_path_prob = 0.3  # must not reach the exported graph
    return net.eval()


def ort_run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert len(session.get_outputs()) == 1  # logits only: no auxiliary head output
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_matches_pytorch(tmp_path, dynamic):
    net = trained_like_net()
    path = tmp_path / "m.onnx"
    info = export_onnx(net, path, batch_size=2, dynamic_batch=dynamic)
    assert info["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.get_outputs()
    assert out.shape[1] == 10 and (out.shape[0] == "batch" if dynamic else out.shape[0] == 2)
    batches = (2, 5) if dynamic else (2,)
    for b in batches:
        x = torch.randn(b, 1, 8, 8)
        got = ort_run(path, x)
        assert got.shape == (b, 10)
        np.testing.assert_allclose(got, net(x).detach().numpy(), atol=1e-4, rtol=1e-4)
    onnx = pytest.importorskip("onnx")

    names = [i.name for i in onnx.load(str(path)).graph.initializer]
    assert not any("auxiliary" in n for n in names)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_pytorch(tmp_path):
    net = trained_like_net()
    info = export_torchscript(net, tmp_path / "m.ts", batch_size=1)
    assert info["max_abs_diff"] < 1e-5
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    x = torch.randn(4, 1, 8, 8)
    out = loaded(x)
    assert isinstance(out, torch.Tensor) and out.shape == (4, 10)
    torch.testing.assert_close(out, net(x))
    assert not any("auxiliary" in k for k in loaded.state_dict())


def test_export_cli_from_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    save_model(run / "model.pt", trained_like_net())
    assert main(["export", str(run), "--json", "--dynamic-batch", "--torchscript", str(tmp_path / "m.ts")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["onnx"]["path"] == str(run / "model.onnx") and (run / "model.onnx").is_file()
    assert result["onnx"]["output_shape"] == ["batch", 10] and result["onnx"]["verified_batch_sizes"] == [1, 3]
    assert result["trained"] and (tmp_path / "m.ts").is_file()


@pytest.mark.parametrize("case", ["missing", "corrupt", "folder", "shape-option"])
def test_export_user_errors_exit_2_with_one_line(tmp_path, capsys, case):
    model = tmp_path / "model.pt"
    args = ["export", str(model)]
    if case == "corrupt":
        model.write_bytes(b"not a checkpoint at all")
    elif case == "folder":
        args = ["export", str(tmp_path)]
    elif case == "shape-option":
        save_model(model, trained_like_net())
        args += ["--cells", "20"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dcanas: error:") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "model.onnx").exists()


def one_line_error(capsys, argv: list[str], needle: str) -> str:
    """Run the CLI in-process; assert exit 2, nothing on stdout and one `dcanas: error:` line containing `needle`."""
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (argv, err)
    assert err.startswith("dcanas: error:") and "\n" not in err and "Traceback" not in err, err
    assert needle in err and not captured.out, (needle, err, captured.out[:500])
    return err


@pytest.mark.parametrize("command", ["export", "profile", "profile-onnx"])
@pytest.mark.parametrize("args, needle", [
    (["--dataset", "cifar10"], "--dataset describes the network of a genotype"),
    (["--classes", "5", "--cells", "3"], "--cells, --classes describe the network of a genotype"),
])
def test_a_trained_model_refuses_options_that_describe_another_network(tmp_path, capsys, command, args, needle):
    """A model file (model.pt or .onnx) fixes its network: --dataset and the shape options are refused by name."""
    model = tmp_path / "model.pt"
    save_model(model, trained_like_net())
    if command == "profile-onnx":
        model = tmp_path / "m.onnx"
        export_onnx(trained_like_net(), model)
    written = sorted(p.name for p in tmp_path.iterdir())
    one_line_error(capsys, ["profile", str(model), "--runs", "5", *args] if command.startswith("profile")
                   else [command, str(model), *args], needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == written


@pytest.mark.parametrize("args, needle", [
    (["--opset", "999"], "--opset 999 is out of range"),
    (["--opset", "3"], "--opset 3 is out of range"),
    (["--opset", str(TORCHSCRIPT_MAX_OPSET + 1), "--exporter", "torchscript"], "is out of range: the torchscript"),
    (["--image-size", "0"], "--image-size must be at least 1, got 0"),  # not the trained size in silence
])
def test_export_refuses_a_bad_opset_or_image_size_before_writing(tmp_path, capsys, args, needle):
    model = tmp_path / "model.pt"
    save_model(model, trained_like_net())
    err = one_line_error(capsys, ["export", str(model), *args], needle)
    if "--opset" in args:
        low, high = opset_range(args[-1] if "--exporter" in args else "auto")
        assert f"ONNX opsets {low}..{high}" in err
        assert ("--exporter dynamo for up to" in err) == (high < int(args[1]) <= opset_range("dynamo")[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no .onnx, no .onnx.json


@pytest.mark.parametrize("opset, exporter", [
    (16, "torchscript"),
    pytest.param(TORCHSCRIPT_MAX_OPSET + 1, "dynamo", marks=pytest.mark.skipif(
        TORCHSCRIPT_MAX_OPSET == opset_range()[1], reason="this torch's exporters end at the same opset")),
])
def test_export_reports_the_opset_in_the_file(tmp_path, capsys, opset, exporter):
    """--json and the text say the opset the written file has; auto takes the dynamo exporter above the other's."""
    onnx = pytest.importorskip("onnx")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (in the export extra)")
    model = tmp_path / "model.pt"
    save_model(model, trained_like_net())
    assert main(["export", str(model), "--opset", str(opset), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["onnx"]
    written = {o.version for o in onnx.load(str(tmp_path / "model.onnx")).opset_import if o.domain in ("", "ai.onnx")}
    assert info["exporter"] == exporter and info["opset"] == opset and written == {opset}


def test_profile_onnx_file(tmp_path, capsys):
    export_onnx(trained_like_net(), tmp_path / "m.onnx", dynamic_batch=True)
    assert main(["profile", str(tmp_path / "m.onnx"), "--runs", "20", "--batch-size", "2", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    stats = result["latency"]
    assert result["input_shape"] == [2, 1, 8, 8] and stats["runs"] == 20
    assert 0 < stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert result["units"] == "ms" and result["device"]["threads"] == 1 and result["device"]["onnxruntime"]


@pytest.fixture(scope="module")
def latency_table(tmp_path_factory):
    """A per-op table for digits at 5 cells x 8 channels, measured through the CLI (few runs: speed, not accuracy)."""
    path = tmp_path_factory.mktemp("latency") / "table.json"
    code = main(["profile", "--ops", "--dataset", "digits", "--cells", "5", "--channels", "8", "--runs", "20",
                 "--rounds", "2", "--warmup", "2", "--calibrate", "2", "--out", str(path), "--quiet", "--json"])
    assert code == 0
    return path


def test_latency_table_has_every_position(latency_table):
    setting = eval_setting_for("digits", **TINY)
    table = build_cost_table(setting)
    attach_latency_table(table, latency_table)
    latency = table.entries["latency"]
    assert latency.shape == table.entries["params"].shape
    assert np.isfinite(latency).all() and (latency >= 0).all()
    assert (latency[:, :, PRIMITIVES.index("none")] == 0).all()
    conv = latency[:, :, PRIMITIVES.index("sep_conv_5x5")]
    assert (conv > 0).mean() > 0.8  # timings, not placeholders (noise may zero an op smaller than its context)
    assert table.fixed["latency"] > 0
    low, high = table.bounds("latency")
    assert table.fixed["latency"] < low < high
    data = json.loads(latency_table.read_text())
    assert data["units"] == "ms" and data["setting"]["cells"] == 5 and data["device"]["processor"]
    assert data["method"]["calibration"]["networks"] == 2 and data["method"]["op_scale"] > 0


def test_latency_table_for_another_setting_is_refused(latency_table, tmp_path):
    other = build_cost_table(eval_setting_for("digits"))  # 8 cells x 16 channels
    with pytest.raises(DcanasError, match="another evaluation network.*differs in cells, channels"):
        attach_latency_table(other, latency_table)
    broken = tmp_path / "broken.json"
    broken.write_text(latency_table.read_text()[:200])
    with pytest.raises(DcanasError, match="not a usable latency table"):
        load_latency_table(broken)
    data = json.loads(latency_table.read_text())
    data["entries"][0][0][4] = -1.0
    broken.write_text(json.dumps(data))
    with pytest.raises(DcanasError, match="negative"):
        load_latency_table(broken)


def test_search_with_max_latency_meets_it(latency_table, tmp_path):
    table = build_cost_table(eval_setting_for("digits", **TINY))
    attach_latency_table(table, latency_table)
    low, high = table.bounds("latency")
    budget = low + 0.3 * (high - low)
    config = SearchConfig(dataset="digits", epochs=1, max_steps=3, batch_size=32, max_latency=budget,
                          latency_table=str(latency_table), eval_cells=5, eval_channels=8)
    result = run_search(config, tmp_path / "run", progress=False, log=lambda _: None)
    predicted = table.genotype_cost(result.genotype)["latency"]
    assert predicted <= budget
    assert result.budgets["latency"]["ok"] and result.budgets["latency"]["value"] == pytest.approx(predicted)


def test_max_latency_without_table_is_refused(tmp_path, capsys):
    with pytest.raises(BudgetError, match="profile --ops"):
        run_search(SearchConfig(dataset="digits", max_latency=1.0), tmp_path / "a", progress=False)
    assert main(["search", "--max-latency", "1", "--run-dir", str(tmp_path / "b"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dcanas: error:") and "\n" not in err and "--latency-table" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_profile_refuses_timing_options_that_measure_nothing(tmp_path, capsys):
    """0 runs (or rounds, or batch) is refused, not replaced by the default; --calibrate -1 too (0: none)."""
    export_onnx(trained_like_net(), tmp_path / "m.onnx")
    for args, needle in [(["--runs", "0"], "--runs must be >= 1, got 0"),
                         (["--runs", "-3"], "--runs must be >= 1, got -3"),
                         (["--rounds", "0"], "--rounds must be >= 1, got 0"),
                         (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
                         (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
                         (["--threads", "-1"], "--threads must be >= 0")]:
        one_line_error(capsys, ["profile", str(tmp_path / "m.onnx"), "--quiet", *args], needle)
    table = tmp_path / "table.json"
    ops = ["profile", "--ops", "--dataset", "digits", "--cells", "5", "--channels", "8", "--out", str(table), "--quiet"]
    for args, needle in [(["--calibrate", "-1"], "--calibrate must be >= 0 (0: no calibration), got -1"),
                         (["--runs", "0"], "--runs must be >= 1, got 0")]:
        one_line_error(capsys, [*ops, *args], needle)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no latency table


def test_profile_cli_user_errors(tmp_path, latency_table, capsys):
    cases = [["profile"], ["profile", "DARTS_V2", "--ops"], ["profile", str(tmp_path / "none.onnx")],
             ["profile", "DARTS_V2", "--dataset", "digits", "--latency-table", str(latency_table)]]
    for args in cases:
        assert main(args + ["--quiet"]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("dcanas: error:"), args


def _deployable_model(path, *, preprocessing=True):
    """A model.pt as `dcanas train` writes it on digits: weights plus the preprocessing and config it records."""
    from dcanas.data import load_dataset

    data = load_dataset("digits")
    extra = {"budgets": {"params": {"limit": 2e5, "value": 1.0, "ok": True}}, "config": {"data_dir": None}}
    if preprocessing:
        extra["preprocessing"] = {"dataset": "digits", "image_size": 8, "layout": "NCHW float32",
                                  "normalise": "(pixel / 255 - mean) / std, per channel", "mean": list(data.mean),
                                  "std": list(data.std), "classes": list(data.classes)}
    save_model(path, trained_like_net(), extra)
    return extra


def test_exported_files_carry_what_a_deployment_needs(tmp_path, capsys):
    from dcanas.export import read_metadata, sidecar_path

    extra = _deployable_model(tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt"), "--json"]) == 0
    onnx_path = tmp_path / "model.onnx"
    inside, beside = read_metadata(onnx_path), json.loads(sidecar_path(onnx_path).read_text())
    assert inside["preprocessing"] == extra["preprocessing"] and inside["budgets"] == extra["budgets"]
    assert inside["input"]["shape"] == [1, 1, 8, 8] and inside["dtype"] == "float32"
    assert inside["preprocessing"]["classes"] == [str(d) for d in range(10)] and "sep_conv" in inside["genotype"]
    assert {k: v for k, v in beside.items() if k not in ("file", "bytes")} == inside
    assert beside["bytes"] == onnx_path.stat().st_size


def test_int8_export_is_calibrated_checked_and_labelled(tmp_path, capsys):
    from dcanas.export import read_metadata
    from dcanas.quantize import normalised

    extra = _deployable_model(tmp_path / "model.pt")
    int8_path = tmp_path / "m8.onnx"
    assert main(["export", str(tmp_path / "model.pt"), "--int8", str(int8_path), "--calibration-images", "64",
                 "--eval-images", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["int8"]
    assert report["calibration_images"] == 64 and report["test_images"] == 100
    assert 0 <= report["int8"]["test_acc"] <= 1 and report["int8"]["bytes"] == int8_path.stat().st_size
    meta = read_metadata(int8_path)
    assert meta["dtype"].startswith("int8") and "7-bit" in meta["dtype"]
    assert meta["preprocessing"] == extra["preprocessing"]
    session = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(int8_path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}  # really quantised
    # weights in 7 bits (quantize.quantize_int8: full-range ones saturate on x86 CPUs without VNNI)
    weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) > 10 and all(np.abs(w.astype(int)).max() <= 64 for w in weights)
    assert max(np.abs(w.astype(int)).max() for w in weights) >= 60  # the 7-bit range is used, not a smaller one
    from dcanas.data import load_dataset

    x = torch.from_numpy(normalised(load_dataset("digits").test_x[:50], extra["preprocessing"]))
    reference = trained_like_net()(x).detach().numpy()
    got = np.concatenate([session.run(None, {"input": x[i:i + 1].numpy()})[0] for i in range(50)])
    # int8 rounding: close to the fp32 network, not equal to it
    assert np.abs(got - reference).max() < 0.1 * np.abs(reference).max() and not np.array_equal(got, reference)


@pytest.mark.parametrize("case", ["untrained", "no-preprocessing", "dynamic", "quantiser-fails", "eval-images", "image-size"])
def test_int8_refusals_keep_what_was_written(tmp_path, capsys, monkeypatch, case):
    model = tmp_path / "model.pt"
    _deployable_model(model, preprocessing=case != "no-preprocessing")
    args = ["export", str(model), "--int8", str(tmp_path / "m8.onnx")]
    if case == "untrained":
        args[1] = "DARTS_V2"
        args += ["--dataset", "digits", "--onnx", str(tmp_path / "g.onnx")]
    elif case == "dynamic":
        args.append("--dynamic-batch")
    elif case == "image-size":
        args += ["--image-size", "16"]  # calibration and the check use the training images' size
    elif case == "eval-images":
        args += ["--eval-images", "5"]  # fewer than one per class
    elif case == "quantiser-fails":
        import onnxruntime.quantization as q

        def broken(*a, **k):
            raise RuntimeError("unsupported op")

        monkeypatch.setattr(q, "quantize_static", broken)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dcanas: error:") and "\n" not in err
    assert not (tmp_path / "m8.onnx").exists() and not (tmp_path / "m8.onnx.json").exists()
    # the fp32 export is written only when the failure is the quantiser's own, and then it is kept whole
    assert (tmp_path / "model.onnx").is_file() == (case == "quantiser-fails")
    if case == "quantiser-fails":
        assert "could not quantise" in err
        ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])


def test_pt2_export_runs_at_any_batch_size(tmp_path, capsys):
    model = tmp_path / "model.pt"
    save_model(model, trained_like_net())
    assert main(["export", str(model), "--no-onnx", "--pt2", str(tmp_path / "m.pt2"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["pt2"]
    assert info["verified_batch_sizes"] == [1, 3] and info["max_abs_diff"] < 1e-4
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(program(x), trained_like_net()(x))
    assert not (tmp_path / "model.onnx").exists()


def test_dynamo_exporter_matches_pytorch(tmp_path):
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (in the export extra)")
    net = trained_like_net()
    info = export_onnx(net, tmp_path / "m.onnx", exporter="dynamo")
    assert info["exporter"] == "dynamo" and info["opset"] >= 18 and info["max_abs_diff"] < 1e-4
    x = torch.randn(1, 1, 8, 8)
    np.testing.assert_allclose(ort_run(tmp_path / "m.onnx", x), net(x).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_profile_provider_is_checked_and_recorded(tmp_path, capsys):
    export_onnx(trained_like_net(), tmp_path / "m.onnx")
    assert main(["profile", str(tmp_path / "m.onnx"), "--provider", "NoSuchExecutionProvider"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "CPUExecutionProvider" in err  # the available ones are listed
    assert main(["profile", str(tmp_path / "m.onnx"), "--provider", "CPUExecutionProvider", "--runs", "5",
                 "--rounds", "1", "--warmup", "1", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["device"]["provider"] == "CPUExecutionProvider"


def test_int8_latency_table(tmp_path, capsys):
    """profile --ops --int8: every op timed after int8 quantisation; the table says so and a search can use it."""
    path = tmp_path / "int8.json"
    assert main(["profile", "--ops", "--int8", "--dataset", "digits", "--cells", "5", "--channels", "8", "--runs",
                 "5", "--rounds", "1", "--warmup", "1", "--calibrate", "0", "--out", str(path), "--quiet"]) == 0
    table = load_latency_table(path)
    assert table.device["dtype"] == "int8" and (table.entries >= 0).all() and table.entries.max() > 0
    # the fixed part as the method defines it, from the two whole networks it timed (its size is a timing, which
    # a loaded machine can push to the clamp at 0: not asserted here)
    single, double = (next(r["median_ms"] for r in table.measurements if r["op"] == name) for name in
                      ("fixed_network (all-none, placeholders)", "fixed_network (all-none, placeholders doubled)"))
    assert table.fixed == pytest.approx(max(0.0, 2 * single - double)) and single > 0
    capsys.readouterr()
    assert main(["profile", str(path), "--int8"]) == 2
    assert "--int8 times the ops" in capsys.readouterr().err


def test_profile_reads_the_export_metadata(tmp_path, capsys):
    _deployable_model(tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt")]) == 0
    capsys.readouterr()
    assert main(["profile", str(tmp_path / "model.onnx"), "--runs", "5", "--rounds", "1", "--warmup", "1",
                 "--json", "--quiet"]) == 0
    metadata = json.loads(capsys.readouterr().out)["metadata"]
    assert metadata["dtype"] == "float32" and metadata["preprocessing"]["dataset"] == "digits"
