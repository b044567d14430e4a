"""Read a quantized model's integer export (quant's `einfhe.intmodel` v1 format) into einfhe layers, with numpy.

The format (`manifest.json` + `model.npz`) is the meeting point of quant and einfhe: quant writes it, einfhe
reads it without importing torch. A linear layer's real weight is (weight - zero) * scale per group of
`group_size` inputs; einfhe keeps the integers (`IntLinear`) when each row has one group, so the batched
packing can multiply by them with additions only. ReLU, GELU, SiLU, tanh and sigmoid become quadratics fitted
on the input range the export recorded (one level each; an approximation, whose accuracy cost the model
benchmark measures). A convolution or an average pooling becomes the (sparse)
matrix it is on flattened (C, H, W) features: in the batched packing, where each feature is a ciphertext, only
its nonzero entries cost additions.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .model import ChebyshevActivation, IntLinear, Linear, Quadratic, Square

__all__ = ["load_integer_model", "avgpool_layer", "checked_layers", "conv_matrix", "read_integer_export"]

FORMAT, VERSION = "einfhe.intmodel", 1
_ERF = np.vectorize(math.erf)
ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


def _array(arrays, layer: dict, key: str) -> np.ndarray | None:
    ref = layer.get("arrays", {}).get(key)
    if ref is None:
        return None
    if ref not in arrays:
        raise ModelError(f"layer {layer.get('name')!r} names array {ref!r}, which model.npz lacks")
    return arrays[ref]


def _linear(arrays, layer: dict):
    activation = layer.get("activation") or {}
    if activation.get("scheme", "float") != "float":
        raise ModelError(
            "encrypted inference needs float activations (W4A16 or int8 weights): activations quantized per "
            "token need a rounding no CKKS circuit computes exactly", layer=layer.get("name"))
    if _array(arrays, layer, "outlier_index") is not None:
        raise ModelError("outlier channels (W4A4) are not supported encrypted", layer=layer.get("name"))
    w, scale, zero = (_array(arrays, layer, k) for k in ("weight", "scale", "zero"))
    if w is None or scale is None or zero is None or w.ndim != 2:
        raise ModelError("a linear layer needs weight [N, K], scale and zero", layer=layer.get("name"))
    groups = np.arange(w.shape[1]) // int(layer.get("group_size", w.shape[1]))
    if scale.shape[0] != w.shape[0] or zero.shape != scale.shape or scale.shape[1] <= groups[-1]:
        raise ModelError("scale and zero must have one column per group of inputs", layer=layer.get("name"))
    q = w.astype(np.int64) - zero.astype(np.int64)[:, groups]
    bias = _array(arrays, layer, "bias")
    input_scale = _array(arrays, layer, "input_scale")
    if input_scale is not None and np.all(input_scale == 1):
        input_scale = None
    if groups[-1] == 0:
        return IntLinear(q, scale[:, 0].astype(np.float64), bias, input_scale)
    weight = q * scale[:, groups].astype(np.float64)
    if input_scale is not None:
        weight = weight * input_scale[None, :]
    return Linear(weight, bias)


def conv_matrix(weight: np.ndarray, in_shape: tuple[int, int, int], stride, padding) -> tuple[np.ndarray, tuple]:
    """The dense matrix of a 2-D convolution on flattened (C, H, W) features, and the output (C, H, W)."""
    cout, cin, kh, kw = weight.shape
    c, h, w = in_shape
    if c != cin:
        raise ModelError(f"the convolution expects {cin} input channels, the model gives it {c}")
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ModelError("the convolution's kernel is larger than its padded input", in_shape=in_shape)
    matrix = np.zeros((cout, oh, ow, c, h, w), dtype=weight.dtype)
    for i in range(oh):
        for j in range(ow):
            for di in range(kh):
                for dj in range(kw):
                    y, x = i * sh + di - ph, j * sw + dj - pw
                    if 0 <= y < h and 0 <= x < w:
                        matrix[:, i, j, :, y, x] = weight[:, :, di, dj]
    return matrix.reshape(cout * oh * ow, c * h * w), (cout, oh, ow)


def _conv(arrays, layer: dict, shape: tuple):
    w, scale, zero = (_array(arrays, layer, k) for k in ("weight", "scale", "zero"))
    if w is None or scale is None or zero is None or w.ndim != 4:
        raise ModelError("a conv2d layer needs weight [Cout, Cin, kh, kw], scale and zero", layer=layer.get("name"))
    q = w.astype(np.int64) - zero.reshape(-1).astype(np.int64)[:, None, None, None]
    matrix, out_shape = conv_matrix(q, shape, layer["stride"], layer["padding"])
    positions = out_shape[1] * out_shape[2]
    bias = _array(arrays, layer, "bias")
    row_scale = np.repeat(scale.reshape(-1).astype(np.float64), positions)
    row_bias = None if bias is None else np.repeat(bias.astype(np.float64), positions)
    return IntLinear(matrix, row_scale, row_bias), out_shape


def avgpool_layer(layer: dict, shape: tuple) -> tuple[IntLinear, tuple]:
    """Average pooling (`kernel_size`, `stride` in `layer`) on (C, H, W) features as a 0/1 integer matrix with the
    1 / window scale deferred, and the output shape."""
    c, h, w = shape
    kh, kw = layer["kernel_size"]
    ones = np.ones((c, c, kh, kw), dtype=np.int64) * np.eye(c, dtype=np.int64)[:, :, None, None]
    matrix, out_shape = conv_matrix(ones, shape, layer["stride"], (0, 0))
    return IntLinear(matrix, np.full(matrix.shape[0], 1.0 / (kh * kw))), out_shape


def _layers(manifest: dict, arrays: dict, activation_degree: int) -> list:
    """The einfhe layers of a parsed manifest (shape bookkeeping for convolutions included)."""
    layers = []
    shape = tuple(manifest.get("input_shape") or ())
    for layer in manifest.get("layers", []):
        op = layer.get("op")
        if op == "linear":
            layers.append(_linear(arrays, layer))
            shape = (layers[-1].weight.shape[0],)
        elif op == "act" and layer.get("fn") == "square":
            layers.append(Square())
        elif op == "act" and layer.get("fn") in ACTIVATIONS:
            if not layer.get("range"):
                raise ModelError(f"activation {layer['fn']!r} needs the input range the export records: export "
                                 "with example_input", layer=layer.get("name"))
            lo, hi = map(float, layer["range"])
            fn = ACTIVATIONS[layer["fn"]]
            layers.append(Quadratic.fit(fn, lo, hi) if activation_degree == 2
                          else ChebyshevActivation.fit(fn, lo, hi, activation_degree))
        elif op in ("conv2d", "avgpool") and len(shape) == 3:
            converted, shape = _conv(arrays, layer, shape) if op == "conv2d" else avgpool_layer(layer, shape)
            layers.append(converted)
        elif op == "flatten":
            shape = (int(np.prod(shape)),)
        else:
            raise ModelError(
                f"layer {layer.get('name')!r} ({op} {layer.get('fn', '')}) has no encrypted form yet; supported: "
                "linear, conv2d and avgpool (on a known (C, H, W) input shape), flatten, act square or "
                f"{'/'.join(ACTIVATIONS)} (as a quadratic fit on the recorded range)",
                layer=layer.get("name"))
    return layers


def read_integer_export(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read `manifest.json` and `model.npz` from `directory` (format and version checked): the manifest and the arrays."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        with np.load(directory / "model.npz", allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot read an integer model from {directory}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ModelError(f"not an {FORMAT} v{VERSION} manifest", path=str(directory))
    return manifest, arrays


def load_integer_model(directory: str | Path, activation_degree: int = 2) -> tuple[list, int]:
    """Read `manifest.json` and `model.npz` from `directory`; return (layers, number of input features).

    Smooth activations become a quadratic fit (`activation_degree=2`, one level) or a Chebyshev interpolant of
    a higher degree evaluated by OpenFHE (more accurate, 4 to 8 levels)."""
    manifest, arrays = read_integer_export(directory)
    layers = checked_layers(lambda: _layers(manifest, arrays, activation_degree), "integer model manifest", directory)
    if not isinstance(layers[0], (Linear, IntLinear)):
        raise ModelError("an integer model starts with a linear or convolution layer", path=str(directory))
    return layers, int(layers[0].weight.shape[1])


def checked_layers(build, what: str, directory: str | Path) -> list:
    """The layers `build()` makes from a model file, a malformed file's lookup or type error raised as a
    ModelError naming `what`, and refused when there are none."""
    try:
        layers = build()
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"malformed {what}: {type(exc).__name__}: {exc}", path=str(directory)) from exc
    if not layers:
        raise ModelError("the model has no layer to run encrypted", path=str(directory))
    return layers
