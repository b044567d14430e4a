"""Bounds on a plan's results from bounds on its encrypted inputs, which decide where the small ring is safe.

N=2^13 holds depths 1-2 at 128-bit only with a 55-bit first modulus, so a result there must stay below 2^14 in
magnitude (einfhe.params.parameters); past it the decryption is wrong. A caller who declares how large its inputs
are (`einfhe.cipher(shape, bound=b)`, `compile_model(..., input_bound=b)`) lets the compiler bound every result:
an einsum's by the same einsum over |plain operands| and the cipher operands' bounds (each output is a sum of
products, so the triangle inequality gives it), a model's layer by layer (|W| b + |bias| for a linear layer, b^2
for a square, |a| b^2 + |b| b + |c| for a quadratic). Where that bound is at most `SAFE_BOUND` (a factor of 4 under
2^14: the junk slots of a rotate-and-sum add up at most two rows' terms), the default ring choice prices the
small ring too (`slots="auto"`); without a bound, or above it, the default stays 8,192 slots.
"""

from __future__ import annotations

import math

import numpy as np

from .layers import IntLinear, Linear, Quadratic, Square

__all__ = ["SAFE_BOUND", "einsum_bound", "model_bound"]

SAFE_BOUND = 2.0 ** 12
_MAX_WORK = 1 << 26  # index space (product of the index sizes) above which no einsum bound is computed


def einsum_bound(subscripts: str, operands, sizes: dict) -> float | None:
    """The largest |entry| the einsum can produce, plain operands (arrays) as given and cipher operands (anything
    with `shape` and `bound`) at their bound; None where a cipher operand has no bound or the index space (`sizes`,
    each index's size) is too large to bound here."""
    if math.prod(sizes.values()) > _MAX_WORK:
        return None
    arrays = []
    for operand in operands:
        if hasattr(operand, "bound"):
            if operand.bound is None:
                return None
            arrays.append(np.full(operand.shape, float(operand.bound)))
        else:
            arrays.append(np.abs(np.asarray(operand, dtype=np.float64)))
    return float(np.max(np.einsum(subscripts, *arrays, optimize=True), initial=0.0))


def model_bound(layers, n_features: int, input_bound: float | None) -> float | None:
    """The largest |output| of a sequential model whose inputs are at most `input_bound` in magnitude; None without
    an input bound or where a layer is not a linear layer, a square or a quadratic."""
    if input_bound is None:
        return None
    bound = np.full(n_features, abs(float(input_bound)))
    for layer in layers:
        if isinstance(layer, (Linear, IntLinear)):
            weight = np.abs(np.asarray(layer.weight, dtype=np.float64))
            if weight.ndim != 2 or weight.shape[1] != bound.size:
                return None
            bias = 0.0 if layer.bias is None else np.abs(np.asarray(layer.bias, dtype=np.float64))
            bound = weight @ bound + bias
        elif isinstance(layer, Square):
            bound = bound**2
        elif isinstance(layer, Quadratic):
            bound = abs(layer.a) * bound**2 + abs(layer.b) * bound + abs(layer.c)
        else:
            return None
    return float(bound.max(initial=0.0))
