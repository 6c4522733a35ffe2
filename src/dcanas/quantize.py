"""int8 models for deployment: onnxruntime's static post-training quantisation, calibrated on training images.

`quantize_int8` turns a verified fp32 ONNX model into a QDQ int8 one (int8 weights per output channel, uint8
activations whose ranges come from a few hundred training images run through the fp32 model), then proves
the result by running it: its test accuracy beside the fp32 model's, both files' sizes and both
latencies on this machine. Quantisation is onnxruntime's (`onnxruntime.quantization.quantize_static`):
the format every onnxruntime execution provider and most mobile runtimes read.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .data import balanced_indices, load_dataset
from .data.stream import StreamedDataset, make_loader
from .errors import ConfigError, DcanasError
from .runs import atomic_write_bytes, write_json

DEFAULT_CALIBRATION_IMAGES = 256
DEFAULT_EVAL_IMAGES = 2000


class QuantizationError(DcanasError):
    """The model could not be quantised (the fp32 file is kept)."""


def deployment_data(preprocessing: dict[str, Any] | None, config: dict[str, Any] | None):
    """The trained model's dataset, loaded as in training (its name, folder and image size from model.pt)."""
    if not preprocessing or not config:
        raise ConfigError("--int8 needs the model's training data to calibrate and check it, and this model.pt "
                          "does not record it (trained by an older dcanas, or an untrained genotype); train it again")
    # a model trained on a streamed set records its resize and centre crop: read the set the same way
    mode = "stream" if "resize" in preprocessing else "memory"
    return _load_dataset(preprocessing["dataset"], config.get("data_dir"), preprocessing["image_size"], mode)


@functools.lru_cache(maxsize=1)  # calibration and the accuracy check read the same set
def _load_dataset(name: str, data_dir: str | None, image_size: int, data_mode: str):
    return load_dataset(name, data_dir, image_size=image_size, data_mode=data_mode)


def balanced_images(data: Any, split: str, count: int | None, seed: int, preprocessing: dict[str, Any]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`count` class-balanced images of `split` ("train" or "test"; all of them when None or more), normalised as
    the network expects, and their labels: from memory, or decoded (resized, centre-cropped) from a streamed set."""
    labels = data.train_y if split == "train" else data.test_y
    ids = balanced_indices(labels, count, seed=seed) if count is not None and count < len(labels) else None
    if isinstance(data, StreamedDataset):
        batches = list(make_loader(data, split, ids, 256, augment=None, seed=0, shuffle=False).epoch(0))
        return torch.cat([x for x, _ in batches]).numpy(), torch.cat([y for _, y in batches]).numpy()
    x = data.train_x if split == "train" else data.test_x
    if ids is not None:
        x, labels = x[ids], labels[ids]
    return normalised(x, preprocessing), labels.numpy()


def normalised(x_uint8, preprocessing: dict[str, Any]) -> np.ndarray:
    """uint8 N x C x H x W images as the network expects them: (x / 255 - mean) / std per channel, float32."""
    mean = np.asarray(preprocessing["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(preprocessing["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((x_uint8.numpy().astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def _batches(images: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for i in range(0, len(images), batch):
        yield images[i:i + batch]


def onnx_accuracy(model: bytes | str | Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX classifier in onnxruntime, image by image when its batch size is fixed."""
    from .profile import make_session

    session = make_session(model, threads=1)
    spec = session.get_inputs()[0]
    batch = spec.shape[0] if isinstance(spec.shape[0], int) else 64
    correct = 0
    for k, x in enumerate(_batches(images, batch)):
        if len(x) < batch:  # a fixed-batch graph: pad the last batch, score only the real rows
            x = np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])
        logits = session.run(None, {spec.name: x})[0]
        rows = labels[k * batch:(k + 1) * batch]
        correct += int((logits[:len(rows)].argmax(1) == rows).sum())
    return correct / max(len(labels), 1)


class _CalibrationReader:
    """Feeds the calibration images to onnxruntime's quantiser in the model's batch size."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int):
        self._inputs = iter([{input_name: x} for x in _batches(images, batch) if len(x) == batch])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._inputs, None)

    def rewind(self) -> None:  # part of onnxruntime's CalibrationDataReader interface; one pass is all we give
        pass


def quantize_int8(fp32: bytes, calibration: np.ndarray, *, reduce_range: bool = True) -> bytes:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations) calibrated on `calibration`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .profile import make_session

    spec = make_session(fp32, threads=1).get_inputs()[0]
    batch = spec.shape[0] if isinstance(spec.shape[0], int) else 1
    if len(calibration) < batch:
        raise ConfigError(f"--calibration-images must be at least the model's batch size {batch}")
    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, target = Path(tmp, "fp32.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        source.write_bytes(fp32)
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(target), _CalibrationReader(spec.name, calibration, batch),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            # 7-bit weights: x86 CPUs without VNNI (AVX2 only) multiply uint8 by int8 with an
                            # instruction whose paired 16-bit sums saturate, and full-range weights lost 10-21
                            # points there (BENCHMARKS 14); onnxruntime advises it, and it costs one bit elsewhere
                            weight_type=QuantType.QInt8, reduce_range=reduce_range)
        except Exception as exc:  # onnxruntime raises many types for unsupported graphs
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise QuantizationError(f"onnxruntime could not quantise this model ({type(exc).__name__}: {reason})"
                                    ) from None
        return target.read_bytes()


def int8_report(fp32: bytes, int8: bytes, preprocessing: dict[str, Any], config: dict[str, Any], *,
                calibration_images: int = DEFAULT_CALIBRATION_IMAGES, eval_images: int | None = DEFAULT_EVAL_IMAGES,
                seed: int = 0) -> dict[str, Any]:
    """fp32 vs int8: test accuracy on the same images, file sizes and latencies on this machine."""
    from .profile import profile_model

    images, labels = balanced_images(deployment_data(preprocessing, config), "test", eval_images, seed, preprocessing)
    latency = {name: profile_model(model)["latency"] for name, model in (("fp32", fp32), ("int8", int8))}
    return {"test_images": len(labels), "calibration_images": calibration_images,
            "fp32": {"test_acc": onnx_accuracy(fp32, images, labels), "bytes": len(fp32),
                     "latency_ms": latency["fp32"]["median_ms"]},
            "int8": {"test_acc": onnx_accuracy(int8, images, labels), "bytes": len(int8),
                     "latency_ms": latency["int8"]["median_ms"]}}


def calibration_images(preprocessing: dict[str, Any] | None, config: dict[str, Any] | None, count: int,
                       seed: int = 0, eval_images: int | None = None) -> np.ndarray:
    """`count` class-balanced training images, normalised as the network expects (and, before anything is
    written, a check that `eval_images` test images can be drawn class-balanced)."""
    if count < 1:
        raise ConfigError(f"--calibration-images must be at least 1, got {count}")
    data = deployment_data(preprocessing, config)
    classes = len(data.classes)
    if eval_images is not None and eval_images < classes:
        raise ConfigError(f"--eval-images must be at least one per class ({classes}), got {eval_images}")
    return balanced_images(data, "train", count, seed, preprocessing)[0]


def export_int8(fp32_path: str | Path, path: str | Path, calibration: np.ndarray, preprocessing: dict[str, Any],
                config: dict[str, Any], *, eval_images: int | None = DEFAULT_EVAL_IMAGES) -> dict[str, Any]:
    """Quantise the verified fp32 ONNX file, check the result by running it, and write it (with the fp32
    file's metadata, the dtype and the check) and its JSON; a failure writes nothing and keeps the fp32 file."""
    from .export import read_metadata, sidecar_path, with_metadata

    fp32 = Path(fp32_path).read_bytes()
    int8 = quantize_int8(fp32, calibration)
    report = int8_report(fp32, int8, preprocessing, config, calibration_images=len(calibration),
                         eval_images=eval_images)
    int8 = with_metadata(int8, {**read_metadata(fp32), "dtype": "int8 (QDQ: per-channel int8 weights in a "
                                "7-bit range, uint8 activations)", "int8_check": report})
    report["int8"]["bytes"] = len(int8)
    path = Path(path)
    atomic_write_bytes(path, int8)
    write_json(sidecar_path(path), {**read_metadata(int8), "file": path.name, "bytes": len(int8)})
    return {"path": str(path), "metadata": str(sidecar_path(path)), **report}
