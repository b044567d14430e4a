"""The integer model format that einfhe reads: ``model.npz`` + ``manifest.json``, readable with numpy alone.

This module imports only numpy and the standard library (einfhe never imports torch); it defines the
schema, a reader, and a numpy forward pass that is the executable meaning of the schema.

``manifest.json``::

    {"format": "einfhe.intmodel", "version": 1,
     "input_shape": [...] | null,            # one sample's shape, batch axis excluded
     "layers": [ <layer>, ... ]}              # applied in order to a batch [B, ...]

Each ``<layer>`` has ``"op"`` and ``"name"`` (the torch module path) plus, by op:

- ``linear``: ``in_features``, ``out_features``, ``group_size``, ``weight_bits`` (4 or 8), and ``arrays``
  naming entries of ``model.npz``:

  - ``weight``: int8 ``[N, K]``; ``scale``: float32 ``[N, G]``; ``zero``: int8 ``[N, G]``, with
    ``G = ceil(K / group_size)``: the real weight is ``(weight[n, k] - zero[n, g]) * scale[n, g]``,
    ``g = k // group_size``;
  - ``bias``: float32 ``[N]`` or null; ``input_scale``: float32 ``[K]`` or null (per-channel factor
    applied to the input first -- the AWQ/SmoothQuant smoothing, foldable into the previous layer);
  - W4A4 only: ``outlier_index`` int64 ``[O]``, ``outlier_weight`` int8 ``[N, O]``, ``outlier_scale``
    float32 ``[N]``: those input channels are zero in ``weight`` and use ``outlier_weight * outlier_scale``.

  and ``activation``: ``{"bits": 16 | 8 | 4, "scheme": "float" | "per_token_symmetric",
  "outlier_bits": 8 | null, "range": [lo, hi] | null}``. ``per_token_symmetric`` with ``b`` bits
  quantizes each input row ``x`` as ``round(x / s)`` clipped to ``[-2^(b-1), 2^(b-1) - 1]`` with
  ``s = max|x| / (2^(b-1) - 1)``; outlier channels are taken out first and quantized on their own with
  ``outlier_bits``. ``range`` is the input range seen on example data (for polynomial activations).
- ``conv2d``: ``in_channels``, ``out_channels``, ``kernel_size`` [kh, kw], ``stride`` [sh, sw],
  ``padding`` [ph, pw], ``weight_bits`` 8, ``arrays`` ``weight`` int8 ``[Cout, Cin, kh, kw]``, ``scale``
  float32 ``[Cout, 1]``, ``zero`` int8 ``[Cout, 1]``, ``bias``; input NCHW; ``activation`` as above.
- ``avgpool``: ``kernel_size`` [kh, kw], ``stride`` [sh, sw] (no padding).
- ``flatten``: ``start_dim`` (1: keep the batch axis).
- ``act``: ``fn`` one of ``relu``, ``gelu`` (erf form), ``tanh``, ``sigmoid``, ``square``; ``range`` [lo, hi] or null.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INT_FORMAT", "INT_VERSION", "IntegerModel", "read_integer_model", "run_integer_model"]

INT_FORMAT = "einfhe.intmodel"
INT_VERSION = 1
_ERF = np.frompyfunc(math.erf, 1, 1)


@dataclass(frozen=True)
class IntegerModel:
    """A parsed integer model: the manifest's layer list and the npz arrays by name."""

    layers: list[dict[str, Any]]
    arrays: dict[str, np.ndarray]
    input_shape: list[int] | None

    def array(self, layer: dict[str, Any], key: str) -> np.ndarray | None:
        """Return the array a layer names under ``key``, or None where the manifest has null."""
        ref = layer.get("arrays", {}).get(key)
        return None if ref is None else self.arrays[ref]


def read_integer_model(directory: str | Path) -> IntegerModel:
    """Read ``manifest.json`` and ``model.npz`` from ``directory``, checking format, version and array names."""
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest.get("format") != INT_FORMAT or manifest.get("version") != INT_VERSION:
        raise ValueError(f"not an {INT_FORMAT} v{INT_VERSION} manifest: {manifest.get('format')!r} "
                         f"v{manifest.get('version')!r}")
    with np.load(directory / "model.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    for layer in manifest["layers"]:
        missing = [ref for ref in layer.get("arrays", {}).values() if ref is not None and ref not in arrays]
        if missing:
            raise ValueError(f"layer {layer['name']!r} names arrays missing from model.npz: {missing}")
    return IntegerModel(manifest["layers"], arrays, manifest.get("input_shape"))


def _quantize_rows(x: np.ndarray, bits: int) -> np.ndarray:
    """Fake-quantize each row symmetrically to ``bits`` (returns the dequantized float32 rows)."""
    qmax = 2 ** (bits - 1) - 1
    scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True) / np.float32(qmax), np.float32(1e-8))
    return (np.clip(np.round(x / scale), -qmax - 1, qmax) * scale).astype(np.float32)


def _weight(model: IntegerModel, layer: dict[str, Any]) -> np.ndarray:
    """Return a layer's real float32 weight from its integers, zero points and scales."""
    w, scale, zero = model.array(layer, "weight"), model.array(layer, "scale"), model.array(layer, "zero")
    flat = w.reshape(w.shape[0], -1).astype(np.float32)
    gs = layer.get("group_size", flat.shape[1])
    g = np.arange(flat.shape[1]) // gs
    return ((flat - zero[:, g].astype(np.float32)) * scale[:, g]).reshape(w.shape)


def _linear(model: IntegerModel, layer: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Apply one ``linear`` layer, with its input smoothing and activation quantization."""
    if (s := model.array(layer, "input_scale")) is not None:
        x = x * s
    act = layer["activation"]
    y = np.zeros((x.shape[0], layer["out_features"]), dtype=np.float32)
    idx = model.array(layer, "outlier_index")
    if idx is not None:
        xo = x[:, idx]
        x = x.copy()
        x[:, idx] = 0.0
        xo = _quantize_rows(xo, act["outlier_bits"]) if idx.size else xo
        y += xo @ (model.array(layer, "outlier_weight").astype(np.float32)
                   * model.array(layer, "outlier_scale")[:, None]).T
    if act["scheme"] == "per_token_symmetric":
        x = _quantize_rows(x, act["bits"])
    y += x @ _weight(model, layer).T
    if (b := model.array(layer, "bias")) is not None:
        y += b
    return y


def _conv2d(model: IntegerModel, layer: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Apply one ``conv2d`` layer (NCHW) by im2col."""
    w = _weight(model, layer)
    (kh, kw), (sh, sw), (ph, pw) = layer["kernel_size"], layer["stride"], layer["padding"]
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    b, c, h, wd = x.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    cols = np.stack([x[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] for i in range(kh) for j in range(kw)], axis=2)
    cols = cols.reshape(b, c * kh * kw, oh * ow)  # channel-major, then kernel row, then kernel column
    y = np.einsum("ok,bkp->bop", w.reshape(w.shape[0], -1), cols).reshape(b, -1, oh, ow)
    if (bias := model.array(layer, "bias")) is not None:
        y = y + bias[None, :, None, None]
    return y.astype(np.float32)


def _avgpool(layer: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Apply average pooling without padding."""
    (kh, kw), (sh, sw) = layer["kernel_size"], layer["stride"]
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    windows = [x[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] for i in range(kh) for j in range(kw)]
    return (sum(windows) / np.float32(kh * kw)).astype(np.float32)


_ACTS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: (0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0)).astype(np.float32))),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "square": np.square,
}


def run_integer_model(model: IntegerModel, x: np.ndarray) -> np.ndarray:
    """Run the model in float32 numpy on a batch ``x``: the reference meaning of the format."""
    x = np.asarray(x, dtype=np.float32)
    for layer in model.layers:
        op = layer["op"]
        if op == "linear":
            x = _linear(model, layer, x)
        elif op == "conv2d":
            x = _conv2d(model, layer, x)
        elif op == "avgpool":
            x = _avgpool(layer, x)
        elif op == "flatten":
            x = x.reshape(*x.shape[: layer["start_dim"]], -1)
        elif op == "act":
            x = _ACTS[layer["fn"]](x).astype(np.float32)
        else:
            raise ValueError(f"unknown op {op!r} in layer {layer.get('name')!r}")
    return x
