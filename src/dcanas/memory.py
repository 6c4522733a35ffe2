"""Memory of one inference: peak activation bytes (predicted from the execution order, and measured) and the
bytes of the weights, at a deployed dtype.

Peak activation memory is a maximum over time, not a sum. An inference is a program (`Value`s in execution
order, `fx_program` traces one with torch.fx, the order PyTorch and an exported graph run it); `program_peak`
gives every op's output its size, frees a tensor after its last use, and reports the largest total alive at
once, the input image (the caller's buffer, alive throughout) included. Views (slices, flatten, identity)
share their base's memory and keep it alive; a BatchNorm right after a convolution is folded into it, as
every export does. It assumes one op at a time and no in-place reuse, as onnxruntime's sequential executor
and most microcontroller runtimes plan; `measured_peak_bytes` checks it against what PyTorch actually
allocates. The DARTS space composes the same programs per op instead of tracing whole networks
(`spaces/darts/peak.py`), fast enough for a search's constraint and repair.
"""
from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

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


@dataclass(frozen=True)
class Value:
    """One step of an inference program: a new tensor of `size` elements, or a view of `view_of` (size 0),
    computed from the values at `inputs` (indices of earlier steps)."""

    size: int
    inputs: tuple[int, ...] = ()
    view_of: int | None = None


def program_peak(values: Sequence[Value], start_alive: Iterable[int] = (), keep: Iterable[int] = ()) -> int:
    """Largest number of elements alive at once while `values` run in order: a value is allocated while its
    inputs are still held and freed after its last use; `start_alive` values exist before the first step
    (inputs from outside), `keep` values are never freed (the caller still needs them)."""
    base = {i: v.view_of for i, v in enumerate(values) if v.view_of is not None}

    def root(i: int) -> int:
        while i in base:
            i = base[i]
        return i

    last_use: dict[int, int] = {}
    for i, v in enumerate(values):
        for used in v.inputs:
            last_use[root(used)] = i
    kept = {root(k) for k in keep}
    alive = {root(i) for i in start_alive}
    live = peak = sum(values[i].size for i in alive)
    for i, v in enumerate(values):
        if v.size and i not in alive:  # the output exists while the op's inputs are still held
            alive.add(i)
            live += v.size
            peak = max(peak, live)
        for done in {root(u) for u in v.inputs} | ({i} if i not in last_use else set()):
            if done in alive and done not in kept and last_use.get(done, i) <= i:
                alive.discard(done)
                live -= values[done].size
    return peak


def _is_view(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.BatchNorm2d):  # folded into the convolution before it, as export does
            before = node.all_input_nodes[0]
            return (before.op == "call_module" and isinstance(modules[before.target], nn.Conv2d)
                    and len(before.users) == 1)
        # an in-place activation writes into its input's storage (the ImageNet stem's ReLUs)
        return isinstance(module, nn.Identity) or getattr(module, "inplace", False) is True
    if node.op == "call_method":
        return node.target in _VIEW_METHODS
    return node.op == "call_function" and node.target in _VIEW_FUNCTIONS


def fx_program(module: nn.Module, *example: torch.Tensor) -> tuple[list[Value], list[int], list[int]]:
    """`module` as an inference program (fx trace, sizes from running `example`): the values, the indices
    of its inputs, and of what it returns."""
    from torch.fx.passes.shape_prop import ShapeProp

    traced = torch.fx.symbolic_trace(module)
    ShapeProp(traced).propagate(*example)
    modules = dict(traced.named_modules())
    index: dict[torch.fx.Node, int] = {}
    values: list[Value] = []
    inputs: list[int] = []
    returned: list[int] = []
    for node in traced.graph.nodes:
        used = tuple(index[n] for n in node.all_input_nodes if n in index)
        if node.op == "output":
            returned = list(used)
            continue
        index[node] = len(values)
        if node.op == "placeholder":
            inputs.append(len(values))
        if node.op != "placeholder" and _is_view(node, modules):
            values.append(Value(0, used, used[0]))
        else:
            meta = node.meta.get("tensor_meta")
            values.append(Value(meta.shape.numel() if hasattr(meta, "shape") else 0, used))
    return values, inputs, returned


def peak_activation_bytes(net: nn.Module, image_size: int | None = None, batch_size: int = 1,
                          dtype: str = "float32") -> int:
    """Largest total of activation bytes alive at once in one inference of `net` (execution order, fx trace)."""
    setting = net.setting
    size = image_size or setting.image_size
    values, inputs, returned = fx_program(inference_copy(net), torch.zeros(batch_size, setting.in_channels,
                                                                           size, size))
    # the input image is the caller's buffer: alive for the whole inference, as runtimes hold it
    return program_peak(values, inputs, inputs + returned) * dtype_bytes(dtype)


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
    if graph_order:  # BatchNorm folded into the convolution before it, as export and the prediction do
        from torch.fx.experimental.optimization import fuse

        module = torch.fx.symbolic_trace(fuse(module))
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
