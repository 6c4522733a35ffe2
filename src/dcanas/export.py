"""Export an evaluation network to ONNX and TorchScript, and prove each file computes what PyTorch does.

The exported graph is the inference network only: eval mode (BatchNorm running statistics, no
drop-path) and the main classifier's logits as the single output; the auxiliary head is a training
aid and never runs on the device.

ONNX export uses PyTorch's TorchScript-based exporter by default. On this project's networks it is
about 5-10x faster than the torch.export-based ("dynamo") exporter (about 1.5 s against 9-18 s for an
8-cell net), needs no `onnxscript`, and folds BatchNorm into the convolutions; that speed matters to
`dcanas profile --ops`, which exports dozens of ops. `exporter="auto"` falls back to the dynamo
exporter where the TorchScript one fails (it is deprecated and will be removed from PyTorch) or for an
opset above the TorchScript one's, and either way the file is verified in onnxruntime before it is written.
"""
from __future__ import annotations

import io
import json
import warnings
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .checks import int_in
from .errors import ConfigError, DcanasError, RunDirError
from .model_io import MODEL_FILE, load_model
from .runs import atomic_write_bytes, write_json
from .spaces.darts.genotype import GENOTYPES, genotype_to_text, load_genotype
from .spaces.darts.network import EvalNetwork, EvalSetting

EXPORTERS = ("auto", "torchscript", "dynamo")
DEFAULT_OPSET = 17
DYNAMO_MIN_OPSET = 18  # the torch.export-based exporter writes opset 18 or later
DEFAULT_TOLERANCE = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(DcanasError):
    """An export failed, or the exported file does not compute what the PyTorch network does."""


@dataclass
class LoadedNetwork:
    """A network ready to export, and where it came from."""

    net: EvalNetwork
    source: str
    trained: bool
    model_path: Path | None  # the model.pt it was loaded from, if any
    extra: dict[str, Any] | None = None  # what training recorded beside the weights (metrics, budgets, ...)

    def describe(self) -> str:
        """One line: what the network is."""
        s = self.net.setting
        what = "trained" if self.trained else "untrained (random weights)"
        return (f"{self.source} ({what}): {s.style} stem, {s.cells} cells, {s.channels} channels, "
                f"{s.in_channels}x{s.image_size}x{s.image_size} input, {s.num_classes} classes")


def names_a_model(source: str | Path) -> bool:
    """Whether `source` is a model file (.pt) or a run folder holding one, rather than a genotype."""
    path = Path(str(source)).expanduser()
    return path.suffix == ".pt" or (path.is_dir() and (path / MODEL_FILE).is_file())


def load_network(source: str | Path, setting: EvalSetting | None = None) -> LoadedNetwork:
    """A model.pt file or run folder holding one (trained), or a genotype spec built in `setting` (untrained)."""
    path = Path(str(source)).expanduser()
    model_path = None
    if path.is_dir() and (path / MODEL_FILE).is_file():
        model_path = path / MODEL_FILE
    elif path.suffix == ".pt":
        if not path.is_file():
            raise RunDirError(f"no model file at {path}; pass a model.pt written by `dcanas train`, its run folder, "
                              f"or a genotype")
        model_path = path  # load_model turns a corrupt or foreign file into one RunDirError
    if model_path is not None:
        net, extra = load_model(model_path)
        return LoadedNetwork(net, str(model_path), True, model_path, extra)
    if path.is_dir() and not (path / "genotype.json").is_file():
        raise RunDirError(f"{path} holds neither {MODEL_FILE} nor genotype.json; pass a model file, a run folder "
                          f"or a genotype")
    genotype = load_genotype(source)
    with torch.random.fork_rng():  # untrained weights, identical on every export, the caller's RNG untouched
        torch.manual_seed(0)
        net = EvalNetwork(genotype, setting or EvalSetting())
    net.eval()
    name = str(source) if str(source) in GENOTYPES or path.exists() else genotype_to_text(genotype)
    return LoadedNetwork(net, name, False, None)


def default_onnx_path(loaded: LoadedNetwork, source: str | Path) -> Path:
    """Next to the model (model.pt -> model.onnx), or <genotype>.onnx in the working folder."""
    if loaded.model_path is not None:
        return loaded.model_path.with_suffix(".onnx")
    path = Path(str(source)).expanduser()
    if path.is_dir():
        return path / "untrained.onnx"
    if path.is_file():
        return path.with_suffix(".onnx")
    return Path(f"{source}.onnx" if str(source) in GENOTYPES else "genotype.onnx")


def example_input(net: EvalNetwork, batch_size: int = 1, image_size: int | None = None, seed: int = 0) -> torch.Tensor:
    """A fixed random input of the network's shape (batch_size x C x size x size)."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    size = net.setting.image_size if image_size is None else image_size  # 0 is refused, not the default
    if size < 1:
        raise ConfigError(f"--image-size must be at least 1, got {size}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, net.setting.in_channels, size, size, generator=generator)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run PyTorch on one thread inside the block, restoring the setting after.

    Exporting and checking run a few small forward passes; OpenMP workers only add synchronisation,
    and on a loaded machine their spin-waits made an 8-cell export take 13 s instead of 1.7 s.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _prepare(module: nn.Module) -> nn.Module:
    """Eval mode, no drop-path: the inference graph."""
    module.eval()
    if hasattr(module, "drop_path_prob"):
        module.drop_path_prob = 0.0
    return module


def inference_copy(net: EvalNetwork) -> EvalNetwork:
    """A copy without the auxiliary head (a tracer would otherwise keep its unused weights), in eval mode."""
    copy = deepcopy(net)
    copy.auxiliary_head = None
    return _prepare(copy)


def opset_range(exporter: str = "auto") -> tuple[int, int]:
    """The ONNX opsets the installed torch's `exporter` writes (auto: either exporter's)."""
    constants = getattr(torch.onnx, "_constants", None)  # torch states its range only in this private module
    low = getattr(constants, "ONNX_MIN_OPSET", 7)
    high = getattr(constants, "ONNX_MAX_OPSET", DYNAMO_MIN_OPSET)
    if exporter == "torchscript":
        return low, getattr(constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", high)
    return low, high  # dynamo raises an opset below DYNAMO_MIN_OPSET to it


def check_opset(opset: int, exporter: str = "auto") -> None:
    """Refuse an opset `exporter` cannot write, before anything is exported (torch would dump its graph and
    fall back to another opset)."""
    low, high = opset_range(exporter)
    if int_in(opset, low, high):
        return
    which = f"torch {torch.__version__}"
    which = which if exporter == "auto" else f"the {exporter} exporter of {which}"
    dynamo_high = opset_range("dynamo")[1]
    hint = f", or --exporter dynamo for up to {dynamo_high}" if high < opset <= dynamo_high else ""
    raise ConfigError(f"--opset {opset} is out of range: {which} writes ONNX opsets {low}..{high}; pass one of "
                      f"those (default {DEFAULT_OPSET}){hint}")


def model_opset(model: bytes) -> int:
    """The opset of the default ONNX domain that a serialised model imports."""
    import onnx

    imports = onnx.load_from_string(model).opset_import
    return next(entry.version for entry in imports if entry.domain in ("", "ai.onnx"))


def onnx_bytes(module: nn.Module, example: torch.Tensor, *, dynamic_batch: bool = False, opset: int = DEFAULT_OPSET,
               exporter: str = "auto") -> tuple[bytes, str]:
    """Export `module` (eval mode) to an in-memory ONNX model; returns (bytes, exporter used)."""
    if exporter not in EXPORTERS:
        raise ConfigError(f"--exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    check_opset(opset, exporter)
    _prepare(module)
    failure: Exception | None = None
    if exporter == "torchscript" or (exporter == "auto" and opset <= opset_range("torchscript")[1]):
        try:
            with single_thread():
                return _export_torchscript_onnx(module, example, dynamic_batch, opset), "torchscript"
        except Exception as exc:  # the legacy exporter may be gone or fail on a new op
            if exporter == "torchscript":
                raise ExportError(f"ONNX export failed ({type(exc).__name__}: {exc}); try --exporter dynamo") from None
            failure = exc
    try:
        with single_thread():
            return _export_dynamo_onnx(module, example, dynamic_batch, opset), "dynamo"
    except ImportError as exc:
        hint = f" (the TorchScript exporter failed first: {failure})" if failure else ""
        raise ExportError(f"the dynamo ONNX exporter needs {exc.name or 'onnxscript'}: "
                          f"pip install onnxscript{hint}") from None
    except Exception as exc:
        raise ExportError(f"ONNX export failed ({type(exc).__name__}: {exc})") from None


def _export_torchscript_onnx(module: nn.Module, example: torch.Tensor, dynamic_batch: bool, opset: int) -> bytes:
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the deprecation notice and constant-folding chatter are not the user's
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
    return buffer.getvalue()


def _export_dynamo_onnx(module: nn.Module, example: torch.Tensor, dynamic_batch: bool, opset: int) -> bytes:
    import onnxscript  # noqa: F401  fail early with an ImportError naming the missing package

    if dynamic_batch and example.shape[0] == 1:
        example = example.repeat(2, 1, 1, 1)  # torch.export specialises a size-1 dimension to a constant
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=max(opset, DYNAMO_MIN_OPSET),
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                                    verbose=False)
    return program.model_proto.SerializeToString()


def _ort_session(model: bytes):
    from .profile import make_session

    return make_session(model, threads=1)


def _check_close(name: str, reference: torch.Tensor, got: np.ndarray, tolerance: float) -> float:
    """Max abs difference; an ExportError when above tolerance x max(1, |logits|)."""
    ref = reference.detach().numpy()
    if got.shape != ref.shape:
        raise ExportError(f"{name} output has shape {list(got.shape)}, PyTorch gives {list(ref.shape)}")
    diff = float(np.abs(got - ref).max())
    limit = tolerance * max(1.0, float(np.abs(ref).max()))
    if not diff <= limit:  # also catches NaN
        raise ExportError(f"{name} output differs from PyTorch by {diff:.3g} (max abs), above the tolerance "
                          f"{limit:.3g}; nothing was written (raise --tolerance to accept it)")
    return diff


def verify_onnx(model: bytes, module: nn.Module, inputs: list[torch.Tensor], tolerance: float = DEFAULT_TOLERANCE
                ) -> float:
    """Run the ONNX model in onnxruntime on each input and compare with PyTorch; returns the max abs diff."""
    session = _ort_session(model)
    outputs = session.get_outputs()
    if len(outputs) != 1:
        raise ExportError(f"the exported graph has {len(outputs)} outputs; expected only the logits")
    worst = 0.0
    with torch.no_grad(), single_thread():
        for x in inputs:
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
            worst = max(worst, _check_close("onnxruntime", module(x), got, tolerance))
    return worst


def deployment_metadata(loaded: LoadedNetwork, image_size: int | None = None) -> dict[str, Any]:
    """What a deployment needs beside the weights: input shape and preprocessing, class names, the genotype,
    and the budgets the network was searched for and meets (a model trained before these were recorded, or
    an untrained genotype, carries what is known)."""
    from . import __version__

    extra = loaded.extra or {}
    setting = loaded.net.setting
    size = image_size or setting.image_size
    metadata: dict[str, Any] = {
        "producer": f"dcanas {__version__}", "source": loaded.source, "trained": loaded.trained,
        "genotype": genotype_to_text(loaded.net.genotype), "setting": setting.to_dict(),
        "input": {"name": INPUT_NAME, "shape": [setting.in_channels, size, size], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "meaning": f"logits over {setting.num_classes} classes"}}
    if "preprocessing" in extra:
        metadata["preprocessing"] = extra["preprocessing"]
    else:
        metadata["preprocessing"] = None  # unknown: trained before dcanas recorded it, or not trained
    for key in ("budgets", "metrics", "flops_convention"):
        if key in extra:
            metadata[key] = extra[key]
    return metadata


def with_metadata(model: bytes, metadata: dict[str, Any]) -> bytes:
    """`model` with each metadata entry as an ONNX metadata_props key (values as JSON text)."""
    import onnx

    proto = onnx.load_from_string(model)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"dcanas.{key}", json.dumps(value)
    return proto.SerializeToString()


def read_metadata(model: bytes | str | Path) -> dict[str, Any]:
    """The dcanas metadata of an ONNX model (file or bytes); {} for a file written by something else."""
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model),
                                                                                   load_external_data=False)
    return {e.key.removeprefix("dcanas."): json.loads(e.value) for e in proto.metadata_props
            if e.key.startswith("dcanas.")}


def sidecar_path(path: str | Path) -> Path:
    """The JSON written beside an exported file: model.onnx -> model.onnx.json."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _check_batches(batch_size: int, dynamic_batch: bool) -> list[int]:
    """Batch sizes to verify at: the export batch, and another one when the batch axis is dynamic."""
    return [batch_size, batch_size + 2] if dynamic_batch else [batch_size]


def export_onnx(net: EvalNetwork, path: str | Path, *, batch_size: int = 1, image_size: int | None = None,
                dynamic_batch: bool = False, opset: int = DEFAULT_OPSET, exporter: str = "auto",
                tolerance: float = DEFAULT_TOLERANCE, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export `net` to ONNX at `path` (written only once onnxruntime reproduces PyTorch), with `metadata` in the
    file and in a JSON beside it; returns a summary."""
    net = inference_copy(net)
    example = example_input(net, batch_size, image_size)
    model, used = onnx_bytes(net, example, dynamic_batch=dynamic_batch, opset=opset, exporter=exporter)
    batches = _check_batches(batch_size, dynamic_batch)
    inputs = [example_input(net, b, image_size, seed=1 + k) for k, b in enumerate(batches)]
    diff = verify_onnx(model, net, inputs, tolerance)
    size = image_size or net.setting.image_size
    batch: int | str = "batch" if dynamic_batch else batch_size
    summary = {"path": str(path), "exporter": used, "opset": model_opset(model), "bytes": len(model),
               "input_shape": [batch, net.setting.in_channels, size, size],
               "output_shape": [batch, net.setting.num_classes], "dynamic_batch": dynamic_batch,
               "max_abs_diff": diff, "tolerance": tolerance, "verified_batch_sizes": batches}
    if metadata is not None:
        metadata = {**metadata, "dtype": "float32", "input": {**metadata["input"], "shape": summary["input_shape"]}}
        model = with_metadata(model, metadata)
        summary["bytes"] = len(model)
    path = Path(path)
    atomic_write_bytes(path, model)
    if metadata is not None:
        write_json(sidecar_path(path), {**metadata, "file": path.name, "bytes": len(model)})
        summary["metadata"] = str(sidecar_path(path))
    return summary


def _verified_program(name: str, net: EvalNetwork, data: bytes, reloaded: Any, batches: list[int], path: str | Path,
                      image_size: int | None, tolerance: float) -> dict[str, Any]:
    """Compare a reloaded program with PyTorch at each batch size, then write its bytes; returns the summary."""
    diff = 0.0
    with torch.no_grad(), single_thread():
        for k, b in enumerate(batches):
            x = example_input(net, b, image_size, seed=1 + k)
            diff = max(diff, _check_close(name, net(x), reloaded(x).numpy(), tolerance))
    path = Path(path)
    atomic_write_bytes(path, data)
    size = image_size or net.setting.image_size
    return {"path": str(path), "bytes": len(data), "input_shape": ["batch", net.setting.in_channels, size, size],
            "max_abs_diff": diff, "tolerance": tolerance, "verified_batch_sizes": batches}


def export_pt2(net: EvalNetwork, path: str | Path, *, image_size: int | None = None,
               tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """`torch.export` the inference network (any batch size) to a .pt2 program, the format ExecuTorch and
    AOTInductor take, verified by loading it back and comparing with PyTorch at two batch sizes."""
    net = inference_copy(net)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        with warnings.catch_warnings(), torch.no_grad(), single_thread():
            warnings.simplefilter("ignore")
            # a size-1 example would be specialised to a constant batch: trace at 2, declare it dynamic
            program = torch.export.export(net, (example_input(net, 2, image_size),), dynamic_shapes=({0: batch},))
            buffer = io.BytesIO()
            torch.export.save(program, buffer)
            reloaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()
    except Exception as exc:
        raise ExportError(f"torch.export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    return _verified_program("torch.export", net, buffer.getvalue(), reloaded, [1, 3], path, image_size, tolerance)


def export_torchscript(net: EvalNetwork, path: str | Path, *, batch_size: int = 1, image_size: int | None = None,
                       tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Trace `net` (eval mode) to TorchScript at `path`, verified against PyTorch; returns a summary."""
    net = inference_copy(net)
    example = example_input(net, batch_size, image_size)
    try:
        with warnings.catch_warnings(), torch.no_grad(), single_thread():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            traced = torch.jit.trace(net, (example,), check_trace=False)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
            reloaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    except Exception as exc:
        raise ExportError(f"TorchScript export failed ({type(exc).__name__}: {exc})") from None
    # a traced graph keeps no batch size; prove it
    return _verified_program("TorchScript", net, buffer.getvalue(), reloaded, [batch_size, batch_size + 2], path,
                             image_size, tolerance)
