"""``quant.export``: any torch module, traced with ``torch.fx``, written as one artifact (:mod:`quant.artifact`).

The module is traced (``QuantLinear`` and quant's other layers are kept whole), run once on the example inputs to
record each value's shape and range, and every traced op is translated into a node of the artifact's DAG:
quantized layers keep their packed format, float ``nn.Linear`` and ``nn.Conv2d`` are quantized to int8 per output
channel (W8A16), a BatchNorm right after a convolution is folded into it first, dropout and identities vanish
(the model is exported in eval mode). An op with no node kind is refused with its name.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from quant.activations import Square
from quant.artifact import write_artifact
from quant.errors import FormatError
from quant.graph_functions import translate_call
from quant.int8_layers import Int8Conv2d, int8_per_channel
from quant.layer_base import QuantLayer
from quant.w8a8_linear import W8A8Linear

__all__ = ["export"]

_LEAVES = (QuantLayer, Int8Conv2d, Square)
_ACT_MODULES = {nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
                Square: "square"}
_ALIASES = (nn.Dropout, nn.Identity)


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping quant's layers (every QuantLayer format) whole like torch.nn's."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        """True for torch.nn's layers and quant's."""
        return isinstance(module, _LEAVES) or super().is_leaf_module(module, qualified_name)


class _Recorder(fx.Interpreter):
    """Runs the traced graph once, keeping every node's value (tensors as shape and range only)."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.seen: dict[str, Any] = {}

    def run_node(self, node: fx.Node) -> Any:
        """Run one node and record what it produced."""
        value = super().run_node(node)
        if isinstance(value, torch.Tensor):
            floating = value.is_floating_point() and value.numel()
            self.seen[node.name] = {"shape": list(value.shape),
                                    "range": [float(value.min()), float(value.max())] if floating else None}
        else:
            self.seen[node.name] = value
        return value


class _Exporter:
    """The translation of one traced module: its nodes, their weights, and the names fx values go by."""

    def __init__(self, module: fx.GraphModule, seen: dict[str, Any]) -> None:
        self.module, self.seen = module, seen
        self.nodes: list[dict[str, Any]] = []
        self.tensors: dict[str, torch.Tensor] = {}
        self.names: dict[str, str] = {}  # fx node name -> the artifact value it stands for
        self.folded: set[str] = set()    # BatchNorm nodes already folded into their convolution

    def is_tensor(self, arg: Any) -> bool:
        """True when ``arg`` is a traced value that is a tensor."""
        return isinstance(arg, fx.Node) and isinstance(self.seen.get(arg.name), dict)

    def constant(self, arg: Any, node: fx.Node) -> Any:
        """A non-tensor argument's value (a traced size or shape is read from the recording)."""
        value = self.seen.get(arg.name) if isinstance(arg, fx.Node) else arg
        if isinstance(value, (dict, torch.Tensor)):
            raise FormatError("expected a constant argument here", node=node.name, op=str(node.target))
        return value

    def dim(self, arg: Any, node: fx.Node) -> int | list:
        """A size argument: an int, or ``["size", value, axis]`` where it reads a traced tensor's size (so the
        artifact follows the input's shape), or ``["floordiv", dim, c]`` of one."""
        if isinstance(arg, fx.Node) and arg.target is operator.getitem:
            source, axis = arg.args
            if isinstance(source, fx.Node) and ((source.target is getattr and source.args[1] == "shape") or
                                                (source.target == "size" and len(source.args) == 1)):
                return ["size", self.names[source.args[0].name], int(axis)]
        if isinstance(arg, fx.Node) and arg.target == "size" and len(arg.args) == 2:
            return ["size", self.names[arg.args[0].name], int(self.constant(arg.args[1], node))]
        if isinstance(arg, fx.Node) and arg.target is operator.floordiv:
            return ["floordiv", self.dim(arg.args[0], node), int(self.constant(arg.args[1], node))]
        return int(self.constant(arg, node))

    def add(self, node: fx.Node, op: str, inputs: list, attrs: dict | None = None,
            weights: dict[str, torch.Tensor] | None = None) -> None:
        """Record an artifact node for the fx node ``node``."""
        first = inputs[0] if inputs else None
        entry = {"name": node.name, "op": op, "inputs": [self.names[a.name] for a in inputs], "attrs": attrs or {},
                 "weights": {}, "range": self.seen[first.name]["range"] if first is not None else None,
                 "shape": self.seen[node.name]["shape"][1:]}
        if node.op == "call_module":
            entry["module"] = str(node.target)  # the submodule's path in the torch model, for messages
        for key, tensor in (weights or {}).items():
            if tensor is not None:
                entry["weights"][key] = f"{node.name}.{key}"
                self.tensors[f"{node.name}.{key}"] = tensor
        self.nodes.append(entry)
        self.names[node.name] = node.name

    def alias(self, node: fx.Node, source: fx.Node) -> None:
        """Let ``node`` stand for the value ``source`` already is."""
        self.names[node.name] = self.names[source.name]

    def call_module(self, node: fx.Node) -> None:
        """Translate a call of a submodule."""
        module, x = self.module.get_submodule(node.target), node.args[0]
        if isinstance(module, _ALIASES):
            self.alias(node, x)
        elif node.name in self.folded:
            self.alias(node, x)
        elif type(module) in _ACT_MODULES:
            attrs = {"approximate": module.approximate} if isinstance(module, nn.GELU) else {}
            self.add(node, _ACT_MODULES[type(module)], [x], attrs)
        elif isinstance(module, (QuantLayer, nn.Linear)):
            self.add(node, "linear", [x], *_linear(module))
        elif isinstance(module, nn.Conv2d):
            self.add(node, "conv2d", [x], *self.conv2d(node, module))
        elif isinstance(module, Int8Conv2d):
            self.add(node, "conv2d", [x], {"format": "W8A16", "stride": list(module.stride),
                                           "padding": list(module.padding)},
                     {"weight": module.weight, "scale": module.scale, "bias": module.bias})
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            scale, shift = _batchnorm_affine(module)
            self.add(node, "batchnorm", [x], {}, {"scale": scale, "shift": shift})
        elif isinstance(module, nn.LayerNorm):
            self.add(node, "layernorm", [x], {"normalized_shape": list(module.normalized_shape), "eps": module.eps},
                     {"weight": module.weight, "bias": module.bias})
        elif isinstance(module, nn.Embedding):
            self.add(node, "embedding", [x], {"client_side": True}, {"weight": module.weight.detach().float()})
        elif isinstance(module, nn.Softmax):
            self.add(node, "softmax", [x], {"dim": module.dim})
        elif isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            self.add(node, "avgpool", [x], self.pooling(node, module))
        elif isinstance(module, nn.Flatten):
            self.add(node, "flatten", [x], {"start_dim": module.start_dim, "end_dim": module.end_dim})
        else:
            raise FormatError("this module has no artifact op", node=node.name, module=type(module).__name__)

    def conv2d(self, node: fx.Node, conv: nn.Conv2d) -> tuple[dict, dict]:
        """A convolution's attrs and int8 weights, with the BatchNorm that alone reads its output folded in."""
        if conv.groups != 1 or conv.dilation != (1, 1) or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise FormatError("conv2d export supports groups=1, dilation=1 and numeric zero padding", node=node.name)
        weight = conv.weight.detach().float()
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(weight.shape[0])
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module":
            bn = self.module.get_submodule(users[0].target)
            if isinstance(bn, nn.BatchNorm2d):
                scale, shift = _batchnorm_affine(bn)
                weight, bias = weight * scale[:, None, None, None], bias * scale + shift
                self.folded.add(users[0].name)
        q, scale = int8_per_channel(weight)
        attrs = {"format": "W8A16", "stride": list(conv.stride), "padding": list(conv.padding)}
        return attrs, {"weight": q, "scale": scale, "bias": bias}

    def pooling(self, node: fx.Node, module: nn.Module) -> dict:
        """An average pooling's window (an adaptive one computed from the recorded input size)."""
        if isinstance(module, nn.AvgPool2d):
            if _pair(module.padding) != [0, 0] or module.ceil_mode:
                raise FormatError("avgpool export supports padding=0 and floor mode", node=node.name)
            return {"kernel_size": _pair(module.kernel_size), "stride": _pair(module.stride or module.kernel_size)}
        h, w = self.seen[node.args[0].name]["shape"][-2:]
        oh, ow = _pair(module.output_size)
        if h % oh or w % ow:
            raise FormatError("adaptive pooling exports only when the output size divides the input", node=node.name)
        return {"kernel_size": [h // oh, w // ow], "stride": [h // oh, w // ow]}


def _pair(value: Any) -> list[int]:
    """A torch size argument as two ints."""
    return [int(value), int(value)] if isinstance(value, int) else [int(v) for v in value]


def _batchnorm_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as a per-channel ``x * scale + shift``."""
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    return scale, bn.bias.detach().float() - bn.running_mean.float() * scale


def _linear(module: nn.Module) -> tuple[dict, dict]:
    """A linear layer's attrs and tensors in its own format (float ``nn.Linear`` quantized to W8A16)."""
    if isinstance(module, W8A8Linear) and module.act_bits == 16:  # float activations: the plain W8A16 node
        q, scale, bias, smooth = module.w8, module.wscale, module.bias, module.input_scale
    elif isinstance(module, QuantLayer):
        return {"format": type(module.config).__name__, "layer": module.describe()}, dict(module.state_dict())
    else:
        q, scale = int8_per_channel(module.weight)
        bias, smooth = None if module.bias is None else module.bias.detach().float(), None
    return ({"format": "W8A16", "in_features": module.in_features, "out_features": module.out_features},
            {"weight": q, "scale": scale, "bias": bias, "input_scale": smooth})


def _short_name(node: fx.Node) -> str:
    """The function, operator or method name a call node runs."""
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


@torch.no_grad()
def export(model: nn.Module, example_inputs: torch.Tensor | tuple, path: str | Path, *,
           keep_example: bool = False) -> Path:
    """Trace ``model`` with torch.fx, calibrate on ``example_inputs`` (a batch, or a tuple of the forward's
    positional inputs), and write it as an artifact directory at ``path`` (see :mod:`quant.artifact`);
    ``keep_example`` also stores the example inputs (``graph["example"]``), for a reader that calibrates more than
    the recorded ranges (einfhe's encrypted encoder layers fit their softmax and LayerNorms on them)."""
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    was_training = model.training
    model.eval()
    try:
        try:
            graph = _Tracer().trace(model)
        except Exception as exc:  # noqa: BLE001 -- torch.fx raises many kinds on data-dependent control flow
            raise FormatError("torch.fx cannot trace this module (data-dependent control flow?)",
                              module=type(model).__name__, reason=str(exc)[:300]) from exc
        traced = fx.GraphModule(model, graph)
        recorder = _Recorder(traced)
        recorder.run(*inputs)
    finally:
        model.train(was_training)
    exporter = _Exporter(traced, recorder.seen)
    graph_inputs, outputs = [], []
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            seen = recorder.seen[node.name]
            dtype = str(inputs[len(graph_inputs)].dtype).removeprefix("torch.")
            graph_inputs.append({"name": node.name, "shape": seen["shape"][1:], "dtype": dtype})
            exporter.names[node.name] = node.name
        elif node.op == "output":
            outputs = _output_names(exporter, node.args[0])
        elif node.op == "call_module":
            exporter.call_module(node)
        elif node.op in ("call_function", "call_method") and exporter.is_tensor(node):
            translate_call(exporter, node, _short_name(node), node.args, node.kwargs)
        elif node.op == "get_attr" and exporter.is_tensor(node):
            raise FormatError("a parameter used directly in forward has no artifact op", node=node.name)
    graph = {"inputs": graph_inputs, "nodes": exporter.nodes, "outputs": outputs}
    if keep_example:
        graph["example"] = {spec["name"]: f"example.{spec['name']}" for spec in graph_inputs}
        exporter.tensors.update({f"example.{spec['name']}": value for spec, value in zip(graph_inputs, inputs)})
    return write_artifact(path, graph, exporter.tensors)


def _output_names(exporter: _Exporter, value: Any) -> list[str]:
    """The artifact names of a forward's outputs (a tensor, or a tuple, list or dict of them), in order."""
    if isinstance(value, fx.Node):
        return [exporter.names[value.name]]
    items = value.values() if isinstance(value, dict) else value
    return [name for item in items for name in _output_names(exporter, item)]
