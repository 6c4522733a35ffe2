"""Memory of one inference: peak activation bytes (predicted from the execution order, and measured) and the
bytes of the weights, at a deployed dtype.

Peak activation memory is a maximum over time, not a sum: `peak_activation_bytes` traces the inference
network with torch.fx (the order PyTorch and an exported graph execute it), gives every op's output its
size, frees a tensor after its last use, and reports the largest total alive at once, the input image
(the caller's buffer, alive throughout) included. Views (slices, flatten, identity) share their base's memory and keep it alive. It assumes one
op at a time and no in-place reuse, as onnxruntime's sequential executor and most microcontroller
runtimes plan; `measured_peak_bytes` checks it against what eager PyTorch actually allocates.
"""
from __future__ import annotations

import operator
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .export import inference_copy
from .units import DTYPE_BYTES

_VIEW_METHODS = {"view", "flatten", "reshape", "squeeze", "unsqueeze", "expand", "permute", "transpose"}
_VIEW_FUNCTIONS = {operator.getitem, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}


def dtype_bytes(dtype: str) -> int:
    """Bytes per value of a deployed dtype name (float32, float16, bfloat16, int8)."""
    from .errors import ConfigError

    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPE_BYTES)}, not {dtype!r}")
    return DTYPE_BYTES[dtype]


def _is_view(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.Identity)
    if node.op == "call_method":
        return node.target in _VIEW_METHODS
    return node.op == "call_function" and node.target in _VIEW_FUNCTIONS


def peak_activation_bytes(net: nn.Module, image_size: int | None = None, batch_size: int = 1,
                          dtype: str = "float32") -> int:
    """Largest total of activation bytes alive at once in one inference of `net` (execution order, fx trace)."""
    from torch.fx.passes.shape_prop import ShapeProp

    module = inference_copy(net)
    setting = net.setting
    size = image_size or setting.image_size
    traced = torch.fx.symbolic_trace(module)
    ShapeProp(traced).propagate(torch.zeros(batch_size, setting.in_channels, size, size))
    modules = dict(traced.named_modules())
    per_value = dtype_bytes(dtype)
    nodes = list(traced.graph.nodes)
    base: dict[torch.fx.Node, torch.fx.Node] = {}

    def root(node: torch.fx.Node) -> torch.fx.Node:
        while node in base:
            node = base[node]
        return node

    nbytes: dict[torch.fx.Node, int] = {}
    for node in nodes:
        if node.op in ("call_module", "call_method", "call_function") and _is_view(node, modules):
            base[node] = node.all_input_nodes[0]
        elif node.op != "output":
            meta = node.meta.get("tensor_meta")
            nbytes[node] = meta.shape.numel() * per_value if hasattr(meta, "shape") else 0
    last_use: dict[torch.fx.Node, int] = {}
    for i, node in enumerate(nodes):
        for used in node.all_input_nodes:
            last_use[root(used)] = i
    live = peak = 0
    alive: set[torch.fx.Node] = set()
    for i, node in enumerate(nodes):
        if nbytes.get(node):  # the output exists while the op's inputs are still held
            alive.add(node)
            live += nbytes[node]
            peak = max(peak, live)
        for done in {root(u) for u in node.all_input_nodes} | ({node} if node not in last_use else set()):
            # the input image is the caller's buffer: alive for the whole inference, as runtimes hold it
            if done in alive and last_use.get(done, i) <= i and done.op != "placeholder":
                alive.discard(done)
                live -= nbytes[done]
    return peak


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of every new tensor storage an op returns, until the tensor holding it is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._storages: set[int] = set()

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self._storages or storage.nbytes() == 0:
            return  # a view, or an in-place result: no new memory
        self._storages.add(key)
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(tensor, self._free, key, storage.nbytes())

    def _free(self, key: int, nbytes: int) -> None:
        self._storages.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.track(value)
        return out


@torch.no_grad()
def measured_peak_bytes(net: nn.Module, image_size: int | None = None, batch_size: int = 1,
                        graph_order: bool = True) -> int:
    """Peak activation bytes PyTorch really allocates in one fp32 inference of `net`, the input included:
    run as the fx graph (which drops each value after its last use, as a graph runtime does), or, with
    `graph_order=False`, as the eager module (whose Python locals keep some tensors alive longer)."""
    module = inference_copy(net)
    if graph_order:
        module = torch.fx.symbolic_trace(module)
    setting = net.setting
    size = image_size or setting.image_size
    counter = _LiveBytes()
    x = torch.zeros(batch_size, setting.in_channels, size, size)
    with counter:
        counter.track(x)
        module(x)
    return counter.peak


def model_bytes(net: nn.Module, dtype: str = "float32") -> int:
    """Bytes of the deployed network's weights at `dtype` (auxiliary head excluded; BatchNorm counted as its
    scale and shift, which export folds into the convolutions before it)."""
    module = inference_copy(net)
    return sum(p.numel() for p in module.parameters()) * dtype_bytes(dtype)
