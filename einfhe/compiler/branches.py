"""The model compiler's layers that branch or reorder, in the batched packing (one ciphertext per feature, samples
in the slots): residual blocks x + f(x), products of two encrypted branches (`MatMul`: cipher x cipher, one
level), and feature reorders (free: a transpose only renames ciphertexts).

Each function lowers one layer onto `state`, the model compiler's `_ModelLowering` (its builder, current value,
width and per-feature deferred scale `pending`); `LOWERINGS` maps a layer type to its function, and the model
compiler dispatches through it, so a new structural layer is one entry here.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ModelError
from ..layout import next_pow2
from ..plan import Mul, Rescale, Sub
from .builder import Packed
from .layers import MatMul, Reorder, Residual

__all__ = ["BATCHED_ONLY", "LOWERINGS", "lower_matmul", "lower_reorder", "lower_residual"]


def _batched(state, position: int, what: str) -> None:
    """Refuse `what` outside the batched packing (or before any value exists)."""
    if state.batch is None or state.value is None:
        raise ModelError(f"{what} need the batched packing (batch=...) after a first layer", layer=position)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two deferred scales are equal (to float rounding)."""
    return bool(np.allclose(a, b, rtol=1e-12, atol=0))


def lower_residual(state, layer: Residual, position: int) -> None:
    """x + f(x): f's output lands in x's geometry; unequal deferred scales cost x one level to match f's."""
    _batched(state, position, "residual blocks")
    skip, skip_pending, width = state.value, state.pending, state.width
    for inner in layer.layers:
        state.apply(inner, position)
    if state.width != width:
        raise ModelError(f"a residual block must keep the width ({width}), its layers give {state.width}",
                         layer=position)
    if not _same(skip_pending, state.pending):
        skip = state.builder.scale(skip, state.channel_plain(skip_pending / state.pending))
    state.value = state.builder.add_values(state.value, skip)


def _padded(state, cts: list[int], width: int) -> tuple[int, ...]:
    """`cts` followed by zero ciphertexts up to the batched layout's power-of-two count."""
    layout_cts = next_pow2(width)
    if len(cts) == layout_cts:
        return tuple(cts)
    zero = state.builder.emit(Sub, cts[0], cts[0])
    return tuple(cts) + (zero,) * (layout_cts - len(cts))


def lower_reorder(state, layer: Reorder, position: int) -> None:
    """Permute the features: the ciphertexts and their deferred scales are renamed, no step is spent."""
    _batched(state, position, "transposes and permutes")
    index = np.asarray(layer.index, dtype=np.int64)
    if sorted(index.tolist()) != list(range(state.width)):
        raise ModelError(f"a reorder must permute the {state.width} features", layer=position)
    cts = [state.value.cts[i] for i in index]
    state.value = Packed(_padded(state, cts, state.width), state.value.layout)
    state.pending = state.pending[index]


def _branch(state, layers: tuple, shape: tuple, start: tuple, position: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Lower one branch from the saved `start`; return its ciphertexts and deferred scales as arrays of `shape`,
    and the levels it used."""
    state.value, state.pending, state.width, state.current, state.level = start
    for inner in layers:
        state.apply(inner, position)
    if state.width != math.prod(shape):
        raise ModelError(f"a matmul operand of shape {tuple(shape)} needs {math.prod(shape)} features, its branch "
                         f"gives {state.width}", layer=position)
    cts = np.array(state.value.cts[:state.width], dtype=np.int64).reshape(shape)
    return cts, state.pending.reshape(shape), state.level


def _applied(state, cts: np.ndarray, pending: np.ndarray) -> np.ndarray:
    """The ciphertexts with their deferred scale multiplied in (one level), for a product whose scales mix."""
    width = cts.size
    value = Packed(_padded(state, cts.ravel().tolist(), width), state.batched_layout(state.current, width))
    scaled = state.builder.scale(value, state.channel_plain(pending.ravel()))
    return np.array(scaled.cts[:width], dtype=np.int64).reshape(cts.shape)


def lower_matmul(state, layer: MatMul, position: int) -> None:
    """Per sample, left @ right over the last two axes: each output ciphertext is the sum over k of ciphertext
    products, rescaled once. A side whose deferred scale varies along k has it applied first (one level)."""
    _batched(state, position, "products of two encrypted values")
    lshape, rshape = tuple(layer.left_shape), tuple(layer.right_shape)
    if len(lshape) < 2 or lshape[:-2] != rshape[:-2] or len(rshape) != len(lshape) or lshape[-1] != rshape[-2]:
        raise ModelError(f"a matmul multiplies (..., m, k) by (..., k, n) with equal leading axes, not {lshape} by "
                         f"{rshape}", layer=position)
    start = (state.value, state.pending, state.width, state.current, state.level)
    left, left_pending, left_level = _branch(state, layer.left, lshape, start, position)
    right, right_pending, right_level = _branch(state, layer.right, rshape, start, position)
    if not _same(left_pending, left_pending[..., :1]):
        left, left_pending, left_level = _applied(state, left, left_pending), np.ones(lshape), left_level + 1
    if not _same(right_pending, right_pending[..., :1, :]):
        right, right_pending, right_level = _applied(state, right, right_pending), np.ones(rshape), right_level + 1
    state.level = max(left_level, right_level)
    state.spend(1)
    builder, k = state.builder, lshape[-1]
    out_shape = layer.out_shape
    cts = []
    for index in np.ndindex(*out_shape):
        lead, i, j = index[:-2], index[-2], index[-1]
        terms = [builder.emit(Mul, int(left[lead + (i, t)]), int(right[lead + (t, j)])) for t in range(k)]
        cts.append(builder.emit(Rescale, builder.sum_values(terms)))
    width = math.prod(out_shape)
    out = next(state.letters)
    state.sizes[out] = width
    state.current, state.width = out, width
    state.value = Packed(_padded(state, cts, width), state.batched_layout(out, width))
    state.pending = (left_pending[..., :, :1] * right_pending[..., :1, :]).reshape(width)


LOWERINGS = {Residual: lower_residual, MatMul: lower_matmul, Reorder: lower_reorder}
BATCHED_ONLY = tuple(LOWERINGS)  # the layer types the one-sample packing has no form for
