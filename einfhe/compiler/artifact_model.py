"""Read quant's model artifact (`quant.artifact` v1: graph.json + weights.safetensors) with numpy, into einfhe layers.

The artifact's DAG becomes the model compiler's sequence of layers: a skip connection (an `add` of the current
value and an earlier one) becomes a `Residual` over the layers in between, whose deferred scales the compiler
aligns; linear layers keep their integers where one scale per row allows (`IntLinear`: W4A16 with one group per
row, W8A16), convolutions and average pooling become the sparse integer matrices they are on flattened (C, H, W)
features (`conv_matrix`), activations become polynomials fitted on the calibrated input range the export
recorded, and flatten/reshape are free. An op with no encrypted form yet (softmax, layernorm, matmul between
activations, per-token quantized activations, ...) is refused with its node's name: `encrypted_blockers` lists
them all, so a service can still serve such a model in plaintext. torch is never imported (safetensors.numpy).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .integer_model import ACTIVATIONS, checked_layers, conv_matrix
from .model import ChebyshevActivation, IntLinear, Linear, Quadratic, Residual, Square

__all__ = ["ARTIFACT_FORMAT", "encrypted_blockers", "load_artifact_model", "read_artifact_graph"]

ARTIFACT_FORMAT, ARTIFACT_VERSION = "quant.artifact", 1
_FREE = ("flatten", "reshape")
_ENCRYPTED = ("linear", "conv2d", "avgpool", "add", "square", *ACTIVATIONS, *_FREE)
_INTEGER_FORMATS = ("W4A16", "W8A16")


def read_artifact_graph(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read an artifact's graph and its weights as numpy arrays, checking format, version and checksums."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("version")) != (
                ARTIFACT_FORMAT, ARTIFACT_VERSION):
            raise ModelError(f"not a {ARTIFACT_FORMAT} v{ARTIFACT_VERSION} manifest", path=str(directory))
        for name in ("graph.json", "weights.safetensors"):
            digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
            if digest != manifest.get("sha256", {}).get(name):
                raise ModelError(f"{name} does not match the manifest's checksum", path=str(directory))
        graph = json.loads((directory / "graph.json").read_text())
        arrays = load_file(str(directory / "weights.safetensors"))
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"cannot read a model artifact from {directory}: {exc}") from exc
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise ModelError("the artifact's graph.json has no node list", path=str(directory))
    return graph, arrays


def _blocker(node: dict) -> str | None:
    """Why a node has no encrypted form, or None when it has one."""
    op, attrs, label = node.get("op"), node.get("attrs", {}), node.get("module") or node.get("name")
    if op not in _ENCRYPTED:
        return f"{label} ({op})"
    if op == "add" and "constant" in attrs:
        return f"{label} (add of a constant)"
    if op == "linear" and attrs.get("format") not in _INTEGER_FORMATS:
        return f"{label} (linear {attrs.get('format')}: per-token quantized activations)"
    return None


def encrypted_blockers(graph: dict) -> list[str]:
    """Every node of the graph that cannot run encrypted yet, as "name (op)" (the torch module path for a module),
    after "inputs (...)" when the graph has more than one input."""
    count = len(graph.get("inputs", []))
    reasons = [] if count == 1 else [f"inputs ({count} model inputs: an encrypted model takes one)"]
    return reasons + [reason for node in graph["nodes"] if (reason := _blocker(node)) is not None]


def _unpack_int4(packed: np.ndarray) -> np.ndarray:
    """quant's packed int4 words [K_padded // 8, N] (quant.packing: 256-row tiles, nibble i = rows 32 i..32 i + 31)
    back to [K_padded, N] codes 0..15."""
    words = packed.view(np.uint32).reshape(packed.shape[0] // 32, 1, 32, packed.shape[1])
    shifts = (4 * np.arange(8, dtype=np.uint32)).reshape(1, 8, 1, 1)
    return ((words >> shifts) & 15).reshape(packed.shape[0] * 8, packed.shape[1]).astype(np.int64)


def _linear(node: dict, weights: dict[str, np.ndarray]):
    """A W4A16 or W8A16 linear node as IntLinear (one scale per row) or Linear (float weight)."""
    attrs, bias, smooth = node["attrs"], weights.get("bias"), weights.get("input_scale")
    if attrs["format"] == "W8A16":
        return IntLinear(weights["weight"].astype(np.int64), weights["scale"].astype(np.float64), bias, smooth)
    layer = attrs["layer"]
    k, gs = int(layer["in_features"]), int(json.loads(layer["config"])["fields"]["group_size"])
    codes = _unpack_int4(weights["qweight"])[:k].T
    groups = np.arange(k) // gs
    zeros, scales = weights["zeros"].astype(np.float64).T, weights["scales"].astype(np.float64).T  # [N, G]
    if groups[-1] == 0 and np.all(zeros == np.round(zeros)):
        q = codes - zeros[:, :1].astype(np.int64)
        return IntLinear(q, scales[:, 0], bias, smooth)
    weight = (codes - zeros[:, groups]) * scales[:, groups]
    return Linear(weight if smooth is None else weight * smooth[None, :], bias)


def _conv(node: dict, weights: dict[str, np.ndarray], shape: tuple) -> tuple[IntLinear, tuple]:
    """A convolution as the integer matrix it is on flattened (C, H, W) features, one scale per output row."""
    matrix, out_shape = conv_matrix(weights["weight"].astype(np.int64), shape, node["attrs"]["stride"],
                                    node["attrs"]["padding"])
    positions = out_shape[1] * out_shape[2]
    bias = weights.get("bias")
    return IntLinear(matrix, np.repeat(weights["scale"].astype(np.float64), positions),
                     None if bias is None else np.repeat(bias.astype(np.float64), positions)), out_shape


def _avgpool(node: dict, shape: tuple) -> tuple[IntLinear, tuple]:
    """Average pooling as a 0/1 matrix with the 1 / window scale deferred."""
    c = shape[0]
    kh, kw = node["attrs"]["kernel_size"]
    ones = np.ones((c, c, kh, kw), dtype=np.int64) * np.eye(c, dtype=np.int64)[:, :, None, None]
    matrix, out_shape = conv_matrix(ones, shape, node["attrs"]["stride"], (0, 0))
    return IntLinear(matrix, np.full(matrix.shape[0], 1.0 / (kh * kw))), out_shape


def _activation(node: dict, degree: int):
    """An activation node as Square or a polynomial fitted on its calibrated input range."""
    if node["op"] == "square":
        return Square()
    if not node.get("range"):
        raise ModelError(f"activation {node['name']!r} has no calibrated range: export with example inputs")
    lo, hi = map(float, node["range"])
    fn = ACTIVATIONS[node["op"]]
    return Quadratic.fit(fn, lo, hi) if degree == 2 else ChebyshevActivation.fit(fn, lo, hi, degree)


def _layers(graph: dict, arrays: dict[str, np.ndarray], degree: int) -> list:
    """The DAG as a sequence of einfhe layers, each skip connection a Residual over the layers it skips."""
    if len(graph.get("inputs", [])) != 1:
        raise ModelError("an encrypted model takes exactly one input")
    current = graph["inputs"][0]["name"]
    shape = tuple(graph["inputs"][0]["shape"])
    layers: list = []
    starts = {current: 0}  # a value still readable by a skip connection -> where its layers end
    for node in graph["nodes"]:
        inputs = node["inputs"]
        if node["op"] == "add":
            skip = next((name for name in inputs if name != current), None)
            if len(inputs) != 2 or current not in inputs or skip not in starts:
                raise ModelError(f"node {node['name']!r}: an add must join the current value and an earlier one "
                                 "on the same path (a skip connection)")
            start = starts[skip]
            layers[start:] = [Residual(tuple(layers[start:]))]
            starts = {name: end for name, end in starts.items() if end <= start}
        elif inputs != [current]:
            raise ModelError(f"node {node['name']!r} reads {inputs}, not the value before it: only chains and skip "
                             "connections run encrypted")
        else:
            weights = {key: arrays[name] for key, name in node.get("weights", {}).items()}
            if node["op"] == "linear":
                layers.append(_linear(node, weights))
                shape = (layers[-1].weight.shape[0],)
            elif node["op"] == "conv2d":
                converted, shape = _conv(node, weights, shape)
                layers.append(converted)
            elif node["op"] == "avgpool":
                converted, shape = _avgpool(node, shape)
                layers.append(converted)
            elif node["op"] in _FREE:
                shape = (int(np.prod(shape)),)
            else:
                layers.append(_activation(node, degree))
        current = node["name"]
        starts[current] = len(layers)
    if graph.get("outputs") != [current]:
        raise ModelError("an encrypted model has one output: its last node")
    return layers


def load_artifact_model(directory: str | Path, activation_degree: int = 2) -> tuple[list, int]:
    """Read the artifact in `directory` as einfhe layers and the number of input features; an op with no
    encrypted form is refused with its node's name (see `encrypted_blockers`)."""
    graph, arrays = read_artifact_graph(directory)
    blockers = encrypted_blockers(graph)
    if blockers:
        raise ModelError(f"these ops cannot run encrypted yet: {', '.join(blockers)}", path=str(directory))
    layers = checked_layers(lambda: _layers(graph, arrays, activation_degree), "model artifact", directory)
    return layers, int(np.prod(graph["inputs"][0]["shape"]))
