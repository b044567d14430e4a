"""How each op of quant's model artifact becomes einfhe layers: two tables the artifact reader dispatches through.

`UNARY` maps an op on one value to a function of (node, its weights as numpy arrays, the input's per-sample shape,
the activation degree) returning the layers it is; `JOINS` maps an op on two encrypted values to a function of
(node, the two branches' layers from the value where they meet, the two inputs' per-sample shapes) returning
the layer that joins them. An op in neither table is an op with no encrypted form yet (`encrypted_blockers`
names it); supporting one is one entry here.

Shapes are per sample (the batch axis, always first, left out). A linear layer on a value with leading axes
(tokens) acts on the last axis of each; reshapes are free and permutes rename ciphertexts (`Reorder`); an add, a
mul or a div by a constant, and sums and means over axes, are integer layers whose scales are deferred (free).
"""

from __future__ import annotations

import json
import math
from typing import Callable

import numpy as np

from ..errors import ModelError
from .integer_model import ACTIVATIONS, avgpool_layer, conv_matrix
from .layers import ChebyshevActivation, IntLinear, Linear, MatMul, Quadratic, Reorder, Residual, Square

__all__ = ["JOINS", "LINEAR_FORMATS", "UNARY"]


def _unpack_int4(packed: np.ndarray) -> np.ndarray:
    """quant's packed int4 words [K_padded // 8, N] back to [K_padded, N] codes 0..15 (quant.packing: whole
    256-row tiles with nibble i = rows 32 i..32 i + 31, then a tail of 32-row sub-blocks, eight rows a word)."""
    words = packed.view(np.uint32)
    full, n = packed.shape[0] // 32 * 32, packed.shape[1]
    shifts = 4 * np.arange(8, dtype=np.uint32)
    head = (words[:full].reshape(full // 32, 1, 32, n) >> shifts.reshape(1, 8, 1, 1)) & 15
    tail = (words[full:, None, :] >> shifts.reshape(1, 8, 1)) & 15
    return np.concatenate([head.reshape(full * 8, n), tail.reshape(-1, n)]).astype(np.int64)


MAX_DENSE = 1 << 24  # entries of the dense matrix a layer on the flat features may become (128 MiB of int64)


def _dense(node: dict, rows: int, cols: int) -> None:
    """Refuse, before allocating, a layer that would be a dense rows x cols matrix past MAX_DENSE."""
    if rows * cols > MAX_DENSE:
        raise ModelError(f"node {node['name']!r} would be a dense {rows} x {cols} matrix on the flat features, more "
                         f"than the {MAX_DENSE} entries an encrypted program takes: a smaller model or input")


def _per_token(layer, rows: int):
    """A linear layer on each of `rows` leading positions: the block-diagonal layer on the flat features."""
    if rows == 1:
        return layer
    eye = np.eye(rows, dtype=np.int64)
    bias = None if layer.bias is None else np.tile(layer.bias, rows)
    if isinstance(layer, IntLinear):
        smooth = None if layer.input_scale is None else np.tile(layer.input_scale, rows)
        return IntLinear(np.kron(eye, layer.q), np.tile(layer.scale, rows), bias, smooth)
    return Linear(np.kron(eye, layer.weight), bias)


def _int4(weights: dict[str, np.ndarray], k: int) -> np.ndarray:
    """A QuantLinear's or FMPQLinear's int4 codes as [N, K] (0..15)."""
    return _unpack_int4(weights["qweight"])[:k].T


def _grouped(q: np.ndarray, scales: np.ndarray, gs: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer codes [N, K] with one scale per (row, group of `gs` inputs), scales [G, N]: the codes and the row
    scales when one group spans the row, else the float weight and None."""
    groups = np.arange(q.shape[1]) // gs
    scales = scales.astype(np.float64).T
    if groups[-1] == 0:
        return q, scales[:, 0]
    return q * scales[:, groups], None


def _w4a16(weights, k, gs):
    """Asymmetric int4 codes with fp16 scales and zero points per group (integer when the zero points are)."""
    codes, zeros = _int4(weights, k), weights["zeros"].astype(np.float64).T
    groups = np.arange(k) // gs
    if groups[-1] == 0 and np.all(zeros == np.round(zeros)):
        return codes - zeros[:, :1].astype(np.int64), weights["scales"].astype(np.float64)[0]
    return (codes - zeros[:, groups]) * weights["scales"].astype(np.float64).T[:, groups], None


def _w4a8(weights, k, gs):
    """QServe's progressive weights: (codes - zero) * scale per group is an int8 integer, one float scale per row."""
    groups = np.arange(k) // gs
    zero, scale = weights["gzero"].astype(np.int64).T[:, groups], weights["gscale"].astype(np.int64).T[:, groups]
    return (_int4(weights, k) - zero) * scale, weights["wscale"].astype(np.float64)


def _w4a4(weights, k, gs):
    """Symmetric int4 codes per group, the outlier input channels' int8 columns with their own row scales."""
    q, scale = _grouped(_int4(weights, k) - 8, weights["scales"], gs)
    index = weights["outlier_idx"].astype(np.int64)
    if index.size == 0:
        return q, scale
    weight = q * scale[:, None] if scale is not None else q
    weight[:, index] = weights["oweight"].astype(np.float64).T * weights["oscale"].astype(np.float64)[:, None]
    return weight, None


def _fmpq(weights, k, gs):
    """Symmetric int4 codes per group over the input channels in the stored order `perm`."""
    stored, scale = _grouped(_int4(weights, k) - 8, weights["scales"], gs)
    own = np.empty_like(stored, dtype=np.float64 if scale is None else stored.dtype)
    own[:, weights["perm"].astype(np.int64)] = stored
    return own, scale


def _w8(weights, k, gs):
    """Per-channel int8 (or int6) codes and scales: an exported float layer, W8A8 and W6A6."""
    return (weights.get("weight", weights.get("w8")).astype(np.int64),
            weights.get("scale", weights.get("wscale")).astype(np.float64))


# weights of each linear format -> (integer codes [N, K], row scales [N]) or (float weight [N, K], None)
LINEAR_FORMATS = {"W8A16": _w8, "W8A8": _w8, "W6A6": _w8, "W4A16": _w4a16, "W4A8": _w4a8, "W4A4": _w4a4,
                  "FMPQ": _fmpq}


def _linear(node: dict, weights: dict[str, np.ndarray], shape: tuple, degree: int) -> list:
    """A linear node in any of quant's formats: its weights exactly as quantized, as IntLinear (integer codes, one
    scale per row: no level in the batched packing) or Linear (float weight), acting on each token. Activations
    stay unrounded: a per-token activation format's rounding has no CKKS circuit, so the encrypted result is the
    quantized weights on exact activations (within that rounding of the plaintext run)."""
    attrs, bias, smooth = node["attrs"], weights.get("bias"), weights.get("input_scale")
    config = attrs.get("layer")
    k = int(config["in_features"]) if config else int(attrs["in_features"])
    gs = int(json.loads(config["config"])["fields"].get("group_size", k)) if config else k
    weight, scale = LINEAR_FORMATS[attrs["format"]](weights, k, gs)
    if scale is not None:
        layer = IntLinear(weight, scale, bias, smooth)
    else:
        layer = Linear(weight if smooth is None else weight * smooth[None, :], bias)
    rows = math.prod(shape[:-1])
    _dense(node, rows * weight.shape[0], rows * weight.shape[1])
    return [_per_token(layer, rows)]


def _conv(node: dict, weights: dict[str, np.ndarray], shape: tuple, degree: int) -> list:
    """A convolution as the integer matrix it is on flattened (C, H, W) features, one scale per output row."""
    _dense(node, math.prod(node["shape"]), math.prod(shape))
    matrix, out_shape = conv_matrix(weights["weight"].astype(np.int64), shape, node["attrs"]["stride"],
                                    node["attrs"]["padding"])
    positions = out_shape[1] * out_shape[2]
    bias = weights.get("bias")
    return [IntLinear(matrix, np.repeat(weights["scale"].astype(np.float64), positions),
                      None if bias is None else np.repeat(bias.astype(np.float64), positions))]


def _avgpool(node: dict, weights: dict, shape: tuple, degree: int) -> list:
    """Average pooling as a 0/1 integer matrix on flattened (C, H, W) features, 1 / window deferred."""
    _dense(node, math.prod(node["shape"]), math.prod(shape))
    return [avgpool_layer(node["attrs"], shape)[0]]


def _activation(node: dict, weights: dict, shape: tuple, degree: int) -> list:
    """An activation node as Square or a polynomial fitted on its calibrated input range."""
    if node["op"] == "square":
        return [Square()]
    if not node.get("range"):
        raise ModelError(f"activation {node['name']!r} has no calibrated range: export with example inputs")
    lo, hi = map(float, node["range"])
    fn = ACTIVATIONS[node["op"]]
    return [Quadratic.fit(fn, lo, hi) if degree == 2 else ChebyshevActivation.fit(fn, lo, hi, degree)]


def _reshape(node: dict, weights: dict, shape: tuple, degree: int) -> list:
    """A reshape or flatten that keeps the batch axis first: the features keep their order, no layer."""
    if node["op"] == "flatten" and node["attrs"].get("start_dim", 1) == 0:
        raise ModelError(f"node {node['name']!r} flattens the batch axis into the features")
    if math.prod(node["shape"]) != math.prod(shape):
        raise ModelError(f"node {node['name']!r} reshapes {math.prod(shape)} features per sample into "
                         f"{math.prod(node['shape'])}: the batch axis must stay first")
    return []


def _reorder(node: dict, weights: dict, shape: tuple, degree: int) -> list:
    """A permute or transpose of the per-sample axes (the batch axis staying first) as a `Reorder`."""
    rank, attrs = len(shape) + 1, node["attrs"]
    dims = list(range(rank))
    if node["op"] == "transpose":
        a, b = attrs["dim0"] % rank, attrs["dim1"] % rank
        dims[a], dims[b] = dims[b], dims[a]
    else:
        dims = [d % rank for d in attrs["dims"]]
    if dims[0] != 0 or sorted(dims) != list(range(rank)):
        raise ModelError(f"node {node['name']!r} moves the batch axis: an encrypted model keeps it first")
    index = np.arange(math.prod(shape)).reshape(shape).transpose([d - 1 for d in dims[1:]])
    return [Reorder(tuple(int(i) for i in index.ravel()))]


def _constant(node: dict, weights: dict, shape: tuple, degree: int) -> list:
    """x + c, x - c, c - x, x * c, x / c as an identity integer layer with a deferred scale and a bias (free)."""
    op, attrs, width = node["op"], node["attrs"], math.prod(shape)
    c, reversed_ = float(attrs["constant"]), bool(attrs.get("reversed"))
    if op == "div" and reversed_:
        raise ModelError(f"node {node['name']!r} divides a constant by an encrypted value")
    sign = -1 if op == "sub" and reversed_ else 1
    scale = {"mul": c, "div": 1.0 / c if c else math.inf}.get(op, 1.0)
    if not math.isfinite(scale) or scale == 0:
        raise ModelError(f"node {node['name']!r} scales by {c}: zero or infinite")
    bias = {"add": c, "sub": -c if not reversed_ else c}.get(op)
    _dense(node, width, width)
    eye = sign * np.eye(width, dtype=np.int64)
    return [IntLinear(eye, np.full(width, scale), None if bias is None else np.full(width, bias))]


def _reduce(node: dict, weights: dict, shape: tuple, degree: int) -> list:
    """A sum or mean over per-sample axes as a 0/1 integer layer (1 / count deferred for a mean)."""
    rank = len(shape) + 1
    axes = sorted({d % rank for d in node["attrs"]["dim"]})
    if 0 in axes:
        raise ModelError(f"node {node['name']!r} reduces over the batch axis")
    index = np.arange(math.prod(shape)).reshape(shape)
    kept = [d - 1 for d in range(1, rank) if d not in axes]
    grouped = index.transpose(kept + [d - 1 for d in axes]).reshape(-1, math.prod(shape[d - 1] for d in axes))
    _dense(node, grouped.shape[0], index.size)
    q = np.zeros((grouped.shape[0], index.size), dtype=np.int64)
    q[np.arange(grouped.shape[0])[:, None], grouped] = 1
    scale = 1.0 / grouped.shape[1] if node["op"] == "mean" else 1.0
    return [IntLinear(q, np.full(q.shape[0], scale))]


def _add(node: dict, left: tuple, right: tuple, left_shape: tuple, right_shape: tuple):
    """A skip connection: one side is the value where the branches meet, the other a branch from it."""
    if left and right:
        raise ModelError(f"node {node['name']!r}: an add must join the current value and an earlier one on the same "
                         "path (a skip connection), not two branches")
    if left_shape != right_shape:
        raise ModelError(f"node {node['name']!r} adds values of shapes {left_shape} and {right_shape}")
    return Residual(left or right)


def _matmul(node: dict, left: tuple, right: tuple, left_shape: tuple, right_shape: tuple):
    """A product of two encrypted values (cipher x cipher)."""
    return MatMul(left, right, tuple(left_shape), tuple(right_shape))


def _mul(node: dict, left: tuple, right: tuple, left_shape: tuple, right_shape: tuple):
    """An elementwise product of two encrypted values: equal shapes, or one of size 1 on the last axis, as a
    matmul of (..., m, 1) and (..., 1, 1) views."""
    if left_shape == right_shape:
        return MatMul(left, right, tuple(left_shape) + (1, 1), tuple(right_shape) + (1, 1))
    if left_shape[:-1] == right_shape[:-1] and right_shape[-1:] == (1,):
        return MatMul(left, right, tuple(left_shape) + (1,), tuple(right_shape) + (1,))
    if left_shape[:-1] == right_shape[:-1] and left_shape[-1:] == (1,):
        return MatMul(right, left, tuple(right_shape) + (1,), tuple(left_shape) + (1,))
    raise ModelError(f"node {node['name']!r} multiplies shapes {left_shape} and {right_shape}: encrypted, only equal "
                     "shapes or a size-1 last axis broadcast")


UNARY: dict[str, Callable[..., list]] = {
    "linear": _linear, "conv2d": _conv, "avgpool": _avgpool,
    "flatten": _reshape, "reshape": _reshape, "permute": _reorder, "transpose": _reorder,
    "add": _constant, "sub": _constant, "mul": _constant, "div": _constant, "sum": _reduce, "mean": _reduce,
    "square": _activation, **{name: _activation for name in ACTIVATIONS},
}
JOINS: dict[str, Callable[..., object]] = {"add": _add, "matmul": _matmul, "mul": _mul}
