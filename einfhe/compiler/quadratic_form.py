"""A model that opens with Linear, Square (or Quadratic), Linear computes a quadratic form of its input,

    y_c = sum_{j <= l} A[c, (j, l)] x_j x_l + sum_j B[c, j] x_j + K_c,

so its one-sample program can take the input's monomials of degree 1 and 2 from the client (n(n+1)/2 + n values,
computed before encryption, one ciphertext where they fit the slots) and compute that block as one plain matrix
times them: depth 1 instead of 3, on as many towers fewer (`compile_model` keeps it where the cost model prices it
below the layer-by-layer program).

The matrix (outputs m, padded to a power of two, by the monomials, padded to a period P) is applied by the
diagonal method for wide matrices with baby-step giant-step rotations (Halevi and Shoup, CRYPTO 2018, Sec. 3-5):
with the monomials repeating every P slots, w = sum_{d < m} diag_d * rot(z, d), diag_d[s] = A[s mod m, (s + d) mod P],
holds in slot s the terms of row s mod m whose columns are s..s+m-1 (mod P); a rotate-and-sum over the P/m blocks
of m slots (log2(P/m) rotations) then leaves y_(s mod m) in every slot s, a clean replicated layout for the
layers that follow. With d = g*n1 + b, the n1 - 1 baby steps rot(z, b) share one key-switch decomposition and the
diagonals are rotated by -g*n1 in numpy, so each giant group takes one rotation. The one rescale comes after
every rotation, so their key-switching error is divided by it: with the rescale first, the giant steps and the
log2(P/m) steps of the rotate-and-sum left a digits-sized block (64 features, 10 outputs, N=2^13) about 100x less
precise (2e-6 against 2e-8 in one measurement), for rotations on one tower fewer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layout import Dim, Layout, next_pow2
from ..plan import Add, CipherInput, HoistedRotate, MulPlain, PlainSlice, Rescale, Rotate, RotatePrecompute
from .builder import Packed
from .layers import IntLinear, Linear, Quadratic, Square
from .strategies.bsgs import baby_steps

__all__ = ["QUADRATIC", "MAX_OUTPUTS", "QuadraticForm", "quadratic_form", "monomials", "monomial_count",
           "lower_quadratic_form"]

QUADRATIC = "quadratic"  # ModelPlan.input_expansion: the client encrypts `monomials(x)`
MAX_OUTPUTS = 256  # the diagonal method takes one plaintext product per output row (padded to a power of two)
_MAX_ENTRIES = 1 << 24  # hidden units x monomials computed for the coefficients, at most


def monomial_count(n: int) -> int:
    """How many monomials of degree 1 and 2 `monomials` makes of n features: n(n+1)/2 + n."""
    return n * (n + 1) // 2 + n


def monomials(x: np.ndarray) -> np.ndarray:
    """The products x_j x_l for j <= l (row-major over the upper triangle), then x itself, along the last axis."""
    x = np.asarray(x, dtype=np.float64)
    rows, cols = np.triu_indices(x.shape[-1])
    return np.concatenate([x[..., rows] * x[..., cols], x], axis=-1)


@dataclass(frozen=True, eq=False)
class QuadraticForm:
    """y = matrix @ monomials(x) + constant: the first three layers of a model collapsed into one."""

    matrix: np.ndarray
    constant: np.ndarray


def _affine(layer) -> tuple[np.ndarray, np.ndarray]:
    weight = np.asarray(layer.weight, dtype=np.float64)
    bias = np.zeros(weight.shape[0]) if layer.bias is None else np.asarray(layer.bias, dtype=np.float64)
    return weight, bias


def quadratic_form(layers, n_features: int, slots: int) -> QuadraticForm | None:
    """The quadratic form of the model's first three layers when they are Linear, Square or Quadratic, Linear, well
    shaped, with at most MAX_OUTPUTS outputs, and the input's monomials fit one ciphertext of `slots`; None
    otherwise."""
    if len(layers) < 3 or monomial_count(n_features) > slots:
        return None
    first, activation, second = layers[:3]
    if not (isinstance(first, (Linear, IntLinear)) and isinstance(activation, (Square, Quadratic))
            and isinstance(second, (Linear, IntLinear))):
        return None
    (w1, b1), (w2, b2) = _affine(first), _affine(second)
    if w1.ndim != 2 or w2.ndim != 2 or w1.shape[1] != n_features or w2.shape[1] != w1.shape[0] \
            or b1.shape != (w1.shape[0],) or b2.shape != (w2.shape[0],):
        return None  # the layer-by-layer lowering says what is wrong
    if w2.shape[0] > MAX_OUTPUTS or w1.shape[0] * monomial_count(n_features) > _MAX_ENTRIES:
        return None  # one product per output row, and the coefficients' work: the layer-by-layer program is cheaper
    a, b, c = (1.0, 0.0, 0.0) if isinstance(activation, Square) else (activation.a, activation.b, activation.c)
    # a (W1 x + b1)^2 + b (W1 x + b1) + c, row k: a x^T (w_k w_k^T) x + (2 a b1_k + b) w_k . x + (a b1_k^2 + b b1_k + c)
    rows, cols = np.triu_indices(n_features)
    pairs = (a * w2) @ (w1[:, rows] * w1[:, cols]) * np.where(rows == cols, 1.0, 2.0)
    linear = (w2 * (2 * a * b1 + b)[None, :]) @ w1
    constant = w2 @ (a * b1**2 + b * b1 + c) + b2
    return QuadraticForm(np.concatenate([pairs, linear], axis=1), constant)


def _diagonals(matrix: np.ndarray, m: int, period: int, slots: int, baby: int) -> np.ndarray:
    """The m extended diagonals of `matrix` over `slots` slots, diagonal g*baby + b rotated by -g*baby."""
    padded = np.zeros((m, period))
    padded[:matrix.shape[0], :matrix.shape[1]] = matrix
    s = np.arange(slots)
    out = np.empty((m, slots))
    for d in range(m):
        shift = d - d % baby
        source = (s - shift) % slots  # slot s of the rotated diagonal is slot s - shift of diag_d
        out[d] = padded[source % m, (source + d) % period]
    return out


def lower_quadratic_form(state, form: QuadraticForm) -> None:
    """Emit the quadratic form as the first step of a one-sample program: `state` (the model lowering) gets its
    input operand (the monomials), the diagonals and the constant as plain operands, and the form's output as its
    current value (one level)."""
    builder, slots = state.builder, state.slots
    rows, count = form.matrix.shape
    m = next_pow2(rows)
    period = max(next_pow2(count), m)
    letter = state.current
    reps = (Dim(builder.fresh_dim_name(), slots // period, "rep"),) if slots > period else ()
    z_layout = Layout(reps + (Dim(letter, period, "axis", count),), slots, letter, (count,))
    state.operands.append(CipherInput(0, z_layout))
    z = builder.load(0, z_layout).cts[0]
    baby = baby_steps(m)
    diagonals = _diagonals(form.matrix, m, period, slots, baby)
    name = state.plain(diagonals)
    out = next(state.letters)
    slice_layout = Layout((Dim(out, slots, "axis", slots),), slots, out, (slots,))
    nonzero = [d for d in range(m) if np.any(diagonals[d])]
    needed = sorted({d % baby for d in nonzero} - {0})
    rotated = {0: z}
    if needed:
        digits = builder.emit(RotatePrecompute, z)
        rotated.update({b: builder.emit(HoistedRotate, z, digits, b) for b in needed})
    parts = []
    for g in sorted({d // baby for d in nonzero}):
        terms = [builder.emit(MulPlain, rotated[d % baby], PlainSlice(name, slice_layout, d))
                 for d in nonzero if d // baby == g]
        inner = builder.sum_values(terms)
        parts.append(builder.emit(Rotate, inner, g * baby) if g else inner)
    value = builder.sum_values(parts)
    step = m
    while step < period:
        value = builder.emit(Add, value, builder.emit(Rotate, value, step))
        step *= 2
    value = builder.emit(Rescale, value)  # after the rotations (module docstring)
    copies = (Dim(builder.fresh_dim_name(), slots // m, "rep"),) if slots > m else ()
    layout = Layout(copies + (Dim(out, m, "axis", rows),), slots, out, (rows,))
    state.spend(1)
    state.value, state.current, state.width = Packed((value,), layout), out, rows
    state.sizes[out] = rows
    state.pending = np.ones(rows)
    state.bias(form.constant)
