"""How ``quant.export`` translates a traced call of a torch function, an operator or a tensor method into an
artifact node (``quant.graph_export`` handles submodules). Shape arguments that read a traced tensor's size stay
symbolic (``Exporter.dim``), so an exported sequence model takes any sequence length."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from quant.errors import FormatError

__all__ = ["translate_call"]

_ACTIVATIONS = {F.relu: "relu", torch.relu: "relu", F.gelu: "gelu", F.silu: "silu", torch.tanh: "tanh",
                torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.tanh: "tanh"}
_ARITHMETIC = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub", operator.mul: "mul",
               torch.mul: "mul", operator.truediv: "div", torch.div: "div", operator.matmul: "matmul",
               torch.matmul: "matmul", torch.bmm: "matmul"}
_ALIASES = ("contiguous", "clone", "detach")
_CASTS = {"float": "float32", "half": "float16", "long": "int64", "int": "int32"}
_REDUCTIONS = ("mean", "sum")


def _index(item: Any) -> Any:
    """One entry of a tensor index as JSON: null (a new axis), ":" (all), "..." or an int."""
    if item is None or item is Ellipsis or isinstance(item, int):
        return "..." if item is Ellipsis else item
    if isinstance(item, slice) and item == slice(None):
        return ":"
    raise FormatError("tensor indexing exports with None, ':', '...' and ints only", index=repr(item))


def _arithmetic(exporter, node: fx.Node, op: str, args: tuple, tensors: list) -> None:
    """Two tensors, or a tensor and a constant on either side (``1.0 - x`` is reversed)."""
    if len(tensors) == 2:
        exporter.add(node, op, tensors)
    elif op != "matmul" and len(tensors) == 1:
        other = args[1] if tensors[0] is args[0] else args[0]
        attrs = {"constant": float(exporter.constant(other, node))}
        if tensors[0] is not args[0]:
            attrs["reversed"] = True
        exporter.add(node, op, tensors, attrs)
    else:
        raise FormatError("arithmetic exports on two tensors, or a tensor and a constant", node=node.name, op=op)


def translate_call(exporter, node: fx.Node, name: str, args: tuple, kwargs: dict) -> None:
    """Record the artifact node of one traced call (``name``: the function's or method's short name)."""
    tensors = [a for a in args if exporter.is_tensor(a)]
    first = tensors[:1]
    if name in _ALIASES:
        exporter.alias(node, args[0])
    elif node.target in _ARITHMETIC or name in ("add", "sub", "mul", "div", "matmul", "rsub"):
        _arithmetic(exporter, node, _ARITHMETIC.get(node.target, name), args, tensors)
    elif node.target in _ACTIVATIONS or name in ("relu", "sigmoid", "tanh"):
        attrs = {"approximate": kwargs.get("approximate", "none")} if node.target is F.gelu else {}
        exporter.add(node, _ACTIVATIONS.get(node.target, name), first, attrs)
    elif name == "softmax":
        dim = kwargs["dim"] if "dim" in kwargs else args[1]
        exporter.add(node, "softmax", first, {"dim": int(exporter.constant(dim, node))})
    elif name == "flatten":
        rest = [exporter.constant(a, node) for a in args[1:]]
        start, end = (rest + [kwargs.get("start_dim", 0), kwargs.get("end_dim", -1)][len(rest):])[:2]
        exporter.add(node, "flatten", first, {"start_dim": int(start), "end_dim": int(end)})
    elif name in ("view", "reshape"):
        dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        exporter.add(node, "reshape", first, {"shape": [exporter.dim(d, node) for d in dims]})
    elif name == "permute":
        dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        exporter.add(node, "permute", first, {"dims": [int(exporter.constant(d, node)) for d in dims]})
    elif name == "transpose":
        exporter.add(node, "transpose", first, {"dim0": int(exporter.constant(args[1], node)),
                                                "dim1": int(exporter.constant(args[2], node))})
    elif name in _REDUCTIONS:
        dims = exporter.constant(kwargs["dim"] if "dim" in kwargs else args[1], node)
        dims = [int(dims)] if isinstance(dims, int) else [int(d) for d in dims]
        exporter.add(node, name, first, {"dim": dims, "keepdim": bool(kwargs.get("keepdim", False))})
    elif name == "clamp":
        bounds = {key: kwargs.get(key, args[i] if len(args) > i else None) for i, key in ((1, "min"), (2, "max"))}
        exporter.add(node, "clamp", first, {k: None if v is None else float(exporter.constant(v, node))
                                            for k, v in bounds.items()})
    elif name == "normalize":
        exporter.add(node, "normalize", first, {"p": float(kwargs.get("p", 2.0)), "dim": int(kwargs.get("dim", 1)),
                                                "eps": float(kwargs.get("eps", 1e-12))})
    elif name == "getitem":
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        exporter.add(node, "index", first, {"index": [_index(item) for item in index]})
    elif name in _CASTS or (name == "to" and len(args) == 2 and isinstance(args[1], torch.dtype)):
        dtype = _CASTS.get(name) or str(args[1]).removeprefix("torch.")
        exporter.add(node, "cast", first, {"dtype": dtype})
    elif name == "zeros_like":
        exporter.add(node, "zeros_like", first)
    elif name == "arange" and len(args) == 1 and set(kwargs) <= {"device"}:  # made where the graph's inputs are
        exporter.add(node, "arange", [], {"end": exporter.dim(args[0], node)})
    elif name in ("adaptive_avg_pool2d", "avg_pool2d"):
        module = (nn.AdaptiveAvgPool2d(exporter.constant(args[1], node)) if name == "adaptive_avg_pool2d"
                  else nn.AvgPool2d(*(exporter.constant(a, node) for a in args[1:])))
        exporter.add(node, "avgpool", first, exporter.pooling(node, module))
    else:
        raise FormatError("this op has no artifact node kind", node=node.name, op=name)
