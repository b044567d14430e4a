"""Encrypted x encrypted matrix product with each operand in one ciphertext, not replicated by the client.

Jiang, Kim, Lauter and Song, "Secure outsourced matrix computation and application to neural networks" (CCS 2018,
Sec. 3.2-3.3): with A (i x j) and B (j x k) zero-padded to d x d (d a power of two, d^2 <= slots) and packed row
major, slot s = r*d + c,

    A @ B = sum_{t<d} phi^t(sigma(A)) * psi^t(tau(B)),

where sigma(A)[r, c] = A[r, r+c] and tau(B)[r, c] = B[r+c, c] (indices mod d) are slot permutations, phi (a column
shift by one) is two masked rotations, by t and t - d, and psi (a row shift) one rotation by t*d. The permutations
are masked rotations grouped baby-step giant-step with hoisted baby steps (2d - 1 offsets for sigma, d for tau);
the rotations of sigma(A) and of tau(B) are hoisted too. The client uploads A and B once each in their row-major
layouts (or takes operands already packed so), where the iteration-space strategy asks the client for d copies of
each (d^3 slots). Depth 3: the permutations,
the column-shift masks, the product.
"""

from __future__ import annotations

import numpy as np

from ...layout import Dim, Layout, next_pow2
from ...plan import Add, HoistedRotate, Mul, MulPlain, Rescale, Rotate, RotatePrecompute
from ..builder import Packed
from ..relayout import slot_mask
from .base import Contraction, FreeCipher, Lowerer
from .bsgs import baby_steps

__all__ = ["lower_jkls", "jkls_shape"]


def _indices(value) -> str:
    """The index string of a cipher value (fresh or already packed)."""
    return value.layout.indices if isinstance(value, Packed) else value.indices


def jkls_shape(c: Contraction, slots: int):
    """(a, b, i, j, k, d) when `c` is a product of two cipher matrices, out = i k, that fits one ciphertext each
    (d^2 <= slots), else None."""
    if len(c.args) != 2 or len(c.reduced) != 1 or len(c.out) != 2:
        return None
    if not all(isinstance(a, (FreeCipher, Packed)) for a in c.args):
        return None
    (j,), (i, k) = c.reduced, c.out
    by_index = {frozenset(_indices(a)): a for a in c.args}
    a, b = by_index.get(frozenset(i + j)), by_index.get(frozenset(j + k))
    if a is None or b is None or a is b or len(_indices(a)) != 2 or len(_indices(b)) != 2:
        return None
    sizes = c.size
    d = max(next_pow2(sizes[x]) for x in (i, j, k))
    if d < 2 or d * d > slots:
        return None
    return a, b, i, j, k, d


def _matrix_layout(value, rows: str, cols: str, d: int, sizes: dict, slots: int) -> Layout:
    """Row-major d x d layout of a matrix operand (rows outer), zero-padded."""
    dims = (Dim(rows, d, "axis", sizes[rows]), Dim(cols, d, "axis", sizes[cols]))
    return Layout(dims, slots, _indices(value), tuple(sizes[x] for x in _indices(value)))


def _permute(lw: Lowerer, ct: int, source: np.ndarray, unit: int) -> int:
    """A ciphertext whose slot s holds slot source[s % block] of `ct` (every block copy alike): masked rotations,
    one per distinct offset (all multiples of `unit`), grouped baby-step giant-step; one level."""
    builder, slots, block = lw.builder, lw.slots, len(source)
    dst = np.arange(block)
    offsets = (source - dst) % block // unit
    distinct = np.unique(offsets).tolist()
    baby = baby_steps(max(distinct) + 1)
    babies = sorted({o % baby for o in distinct} - {0})
    rotated = {0: ct}
    if babies:
        digits = builder.emit(RotatePrecompute, ct)
        rotated.update({b: builder.emit(HoistedRotate, ct, digits, b * unit) for b in babies})
    parts = []
    for giant in sorted({o // baby for o in distinct}):
        shift = giant * baby * unit
        terms = [builder.emit(MulPlain, rotated[o % baby], slot_mask((dst[offsets == o] + shift) % block, block, slots))
                 for o in distinct if o // baby == giant]
        inner = builder.emit(Rescale, builder.sum_values(terms))
        parts.append(builder.emit(Rotate, inner, shift) if giant else inner)
    return builder.sum_values(parts)


def lower_jkls(lw: Lowerer, c: Contraction) -> Packed | None:
    """Lower an encrypted matrix product by Jiang-Kim-Lauter-Song; None when it does not apply."""
    found = jkls_shape(c, lw.slots)
    if found is None:
        return None
    a, b, i, j, k, d = found
    builder, sizes, slots, block = lw.builder, c.size, lw.slots, d * d
    layouts = ((a, _matrix_layout(a, i, j, d, sizes, slots)), (b, _matrix_layout(b, j, k, d, sizes, slots)))
    if any(isinstance(v, Packed) and v.layout != layout for v, layout in layouts):
        return None  # an operand already packed otherwise: iteration space moves it
    x, y = (v.cts[0] if isinstance(v, Packed) else lw.load_free(v, layout).cts[0] for v, layout in layouts)
    row, col = np.divmod(np.arange(block), d)
    sigma = _permute(lw, x, row * d + (row + col) % d, 1)
    tau = _permute(lw, y, (row + col) % d * d + col, d)
    sigma_digits = builder.emit(RotatePrecompute, sigma)
    tau_digits = builder.emit(RotatePrecompute, tau)
    products = [builder.emit(Mul, sigma, tau)]
    for t in range(1, d):
        left = builder.emit(MulPlain, builder.emit(HoistedRotate, sigma, sigma_digits, t),
                            slot_mask(np.flatnonzero(col < d - t), block, slots))
        right = builder.emit(MulPlain, builder.emit(HoistedRotate, sigma, sigma_digits, (t - d) % block),
                             slot_mask(np.flatnonzero(col >= d - t), block, slots))
        shifted = builder.emit(Rescale, builder.emit(Add, left, right))
        products.append(builder.emit(Mul, shifted, builder.emit(HoistedRotate, tau, tau_digits, t * d)))
    out = builder.emit(Rescale, builder.sum_values(products))
    dims = (Dim(i, d, "axis", sizes[i]), Dim(k, d, "axis", sizes[k]))
    return Packed((out,), Layout(dims, slots, i + k, (sizes[i], sizes[k])))
