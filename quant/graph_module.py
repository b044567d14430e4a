"""An artifact loaded back into torch: ``ArtifactModule`` runs the DAG on quant's layers and kernel dispatch.

Linear layers become the quantized layer of their format (``QuantLinear`` for W4A16, W4A8, W4A4; ``W8A8Linear``,
``FMPQLinear``, ...: their buffers loaded as exported; a plain W8A16 or W8A8 node a ``W8A8Linear`` from its int8
codes), convolutions ``Int8Conv2d``: on CUDA tensors they run the Triton kernels, elsewhere the torch references
beside them. The other ops are the torch functions they were traced from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from quant.artifact import read_artifact
from quant.errors import FormatError
from quant.int8_layers import Int8Conv2d
from quant.layers import layer_from_description
from quant.w8a8_linear import W8A8Linear

__all__ = ["ArtifactModule", "load_artifact"]

def _arithmetic(fn: Callable) -> Callable[..., torch.Tensor]:
    """An elementwise op on two values, or on one and the node's constant (on the left when ``reversed``)."""
    def run(attrs: dict, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if b is not None:
            return fn(a, b)
        return fn(attrs["constant"], a) if attrs.get("reversed") else fn(a, attrs["constant"])
    return run


def _index(attrs: dict, x: torch.Tensor) -> torch.Tensor:
    """Index with the node's entries (null: new axis, ":" all, "..." ellipsis, ints)."""
    table = {":": slice(None), "...": Ellipsis, None: None}
    return x[tuple(table[item] if item in table else int(item) for item in attrs["index"])]


_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "add": _arithmetic(torch.add),
    "sub": _arithmetic(torch.sub),
    "mul": _arithmetic(torch.mul),
    "div": _arithmetic(torch.div),
    "matmul": lambda attrs, a, b: a @ b,
    "relu": lambda attrs, x: torch.relu(x),
    "gelu": lambda attrs, x: F.gelu(x, approximate=attrs.get("approximate", "none")),
    "silu": lambda attrs, x: F.silu(x),
    "tanh": lambda attrs, x: torch.tanh(x),
    "sigmoid": lambda attrs, x: torch.sigmoid(x),
    "square": lambda attrs, x: x * x,
    "softmax": lambda attrs, x: torch.softmax(x, attrs["dim"]),
    "avgpool": lambda attrs, x: F.avg_pool2d(x, attrs["kernel_size"], attrs["stride"]),
    "mean": lambda attrs, x: x.mean(attrs["dim"], keepdim=attrs["keepdim"]),
    "sum": lambda attrs, x: x.sum(attrs["dim"], keepdim=attrs["keepdim"]),
    "clamp": lambda attrs, x: x.clamp(min=attrs["min"], max=attrs["max"]),
    "normalize": lambda attrs, x: F.normalize(x, p=attrs["p"], dim=attrs["dim"], eps=attrs["eps"]),
    "flatten": lambda attrs, x: torch.flatten(x, attrs["start_dim"], attrs["end_dim"]),
    "reshape": lambda attrs, x: x.reshape(*attrs["shape"]),
    "permute": lambda attrs, x: x.permute(*attrs["dims"]),
    "transpose": lambda attrs, x: x.transpose(attrs["dim0"], attrs["dim1"]),
    "index": _index,
    "cast": lambda attrs, x: x.to(getattr(torch, attrs["dtype"])),
    "zeros_like": lambda attrs, x: torch.zeros_like(x),
    "arange": lambda attrs, device: torch.arange(attrs["end"], device=device),
}
_SIZED = {"reshape": "shape", "arange": "end"}  # attrs holding sizes that follow other values' shapes


def _size(expr: Any, values: dict[str, torch.Tensor]) -> Any:
    """Evaluate a size attr: ints as they are, ``["size", value, axis]``, ``["floordiv", size, c]``, lists of them."""
    if isinstance(expr, list) and expr and expr[0] == "size":
        return values[expr[1]].shape[expr[2]]
    if isinstance(expr, list) and expr and expr[0] == "floordiv":
        return _size(expr[1], values) // expr[2]
    return [_size(item, values) for item in expr] if isinstance(expr, list) else expr


class _ChannelAffine(nn.Module):
    """A BatchNorm in eval mode that was not folded: ``x * scale + shift`` along axis 1."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.float())
        self.register_buffer("shift", shift.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale and shift each channel."""
        view = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(view) + self.shift.view(view)


def _layer(node: dict[str, Any], weights: dict[str, torch.Tensor]) -> nn.Module:
    """The torch module of a node that holds weights."""
    op, attrs = node["op"], node["attrs"]
    if op == "linear" and "layer" in attrs:  # a QuantLayer of any format, its buffers as it holds them
        layer = layer_from_description(attrs["layer"])
        layer.load_state_dict(weights, strict=True)
        return layer
    if op == "linear":
        return W8A8Linear.from_int8(weights["weight"], weights["scale"], weights.get("bias"),
                                    act_bits=8 if attrs["format"] == "W8A8" else 16,
                                    input_scale=weights.get("input_scale"))
    if op == "conv2d":
        return Int8Conv2d(weights["weight"], weights["scale"], weights.get("bias"), stride=attrs["stride"],
                          padding=attrs["padding"])
    if op == "batchnorm":
        return _ChannelAffine(weights["scale"], weights["shift"])
    if op == "layernorm":
        layer = nn.LayerNorm(attrs["normalized_shape"], eps=attrs["eps"], elementwise_affine="weight" in weights,
                             bias="bias" in weights)
        layer.load_state_dict(weights, strict=True)
        return layer
    return nn.Embedding.from_pretrained(weights["weight"], freeze=True)


_WEIGHTED = ("linear", "conv2d", "batchnorm", "layernorm", "embedding")


class ArtifactModule(nn.Module):
    """A model artifact's graph as a torch module: ``forward`` takes the graph's inputs in order."""

    def __init__(self, graph: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.input_names = [spec["name"] for spec in graph["inputs"]]
        self.output_names = list(graph["outputs"])
        self.graph_nodes = graph["nodes"]
        self.layers = nn.ModuleDict()
        for node in self.graph_nodes:
            if node["op"] not in _WEIGHTED and node["op"] not in _FUNCTIONS:
                raise FormatError("the artifact names an op quant cannot run", node=node["name"], op=node["op"])
            if node["op"] in _WEIGHTED:
                weights = {key: tensors[name] for key, name in node["weights"].items()}
                self.layers[node["name"]] = _layer(node, weights)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the graph on its inputs; one output alone, several as a tuple."""
        values = dict(zip(self.input_names, inputs))
        for node in self.graph_nodes:
            # an op without inputs (arange) makes its tensor on the device of the graph's first input
            args = [values[name] for name in node["inputs"]] or [inputs[0].device]
            if node["op"] in _WEIGHTED:
                values[node["name"]] = self.layers[node["name"]](*args)
            else:
                attrs = node["attrs"]
                if node["op"] in _SIZED:
                    key = _SIZED[node["op"]]
                    attrs = {**attrs, key: _size(attrs[key], values)}
                values[node["name"]] = _FUNCTIONS[node["op"]](attrs, *args)
        outputs = tuple(values[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs


def load_artifact(path: str | Path) -> ArtifactModule:
    """Read the artifact at ``path`` (checksums checked) into an ``ArtifactModule`` in eval mode."""
    graph, tensors = read_artifact(path)
    return ArtifactModule(graph, tensors).eval()
