"""Diagonal method with baby-step giant-step and hoisted rotations, for a cipher vector (or a batch of them)
times a plain matrix.

Halevi and Shoup, "Algorithms in HElib" (CRYPTO 2014, Sec. 4.1) and "Faster homomorphic linear
transformations in HElib" (CRYPTO 2018, Sec. 3-5): with the matrix zero-padded to d x d and x repeating every
d slots, y = sum_k diag_k(W) * rot(x, k). Writing k = g*n1 + b,

    y = sum_g rot( sum_b rot(diag_{g*n1+b}, -g*n1) * rot(x, b), g*n1 ),

so the n1 - 1 baby-step rotations of x share one key-switch precomputation (hoisting) and only the giant
steps rotate on their own, each after its group is rescaled (a rotation of a rescaled ciphertext is cheaper;
with the builder's `late_rescale`, before: one rescale at the end, for less key-switching error).

When d is smaller than the slot block (span slots, x repeating in it span / d times), m = min(d, span / d)
copies share the work (the "hybrid" extended diagonals of GAZELLE, Juvekar et al., USENIX Security 2018,
Sec. 5.2, with BSGS on top): output row t is spread over the m slots t*m + c (c < m), and the shifts are
multiples of m, r = m*k for k < d / m. The slot t*m + c shifted by m*k holds x[(t*m + c + m*k) mod d], and as
c and k run over their ranges c + m*k covers 0..d-1 once, so the extended diagonal that multiplies it,
W[t, (t*m + c + m*k) mod d], gives every term of row t exactly once: d / m plaintext products (P / slots for
a square matrix filling the slots) and a final rotate-and-sum of log2(m) steps over the m slots of a row
(the result sits at slot t*m, the other m - 1 slots hold junk). The diagonal plaintexts are computed by the
server in numpy (`Diagonals`); those that the padding makes zero are skipped. A batch of vectors sits inside
each slot block (x packed as [j | batch]), so every rotation is a multiple of the batch block and the
diagonals are replicated across it; batch axes that do not fit one ciphertext beside j tile it over several
([outer batch | j | inner batch]), each ciphertext taking the same diagonals: the products are emitted diagonal
by diagonal over all ciphertexts, so each diagonal plaintext is encoded once per run.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ...layout import Dim, Layout, next_pow2
from ...plan import (
    diagonals,
    Add, Diagonals, HoistedRotate, MulPlain, PlainExpr, PlainSlice, Rescale, Rotate, RotatePrecompute,
)
from ..builder import Packed
from .base import Contraction, Lowerer, PlainValue

__all__ = ["lower_bsgs", "lower_diagonal", "bsgs_shape", "baby_steps", "replicas_for"]


def baby_steps(d: int) -> int:
    """Baby steps n1 for d diagonals: sqrt(d) rounded up to a power of two (n1 * n2 = d, n1 >= n2)."""
    return 1 << math.ceil(math.log2(d) / 2) if d > 1 else 1


def bsgs_shape(c: Contraction, slots: int):
    """(plain, cipher, i, j, batch) when the contraction is a cipher vector (batch) times a plain matrix that
    fits the diagonal method in one ciphertext, else None."""
    if len(c.args) != 2 or len(c.reduced) != 1:
        return None
    plains = [a for a in c.args if isinstance(a, PlainValue)]
    ciphers = [a for a in c.args if not isinstance(a, PlainValue)]
    if len(plains) != 1 or len(ciphers) != 1:
        return None
    (plain,), (cipher,) = plains, ciphers
    j = c.reduced
    sizes = c.size
    cipher_indices = cipher.layout.indices if isinstance(cipher, Packed) else cipher.indices
    cipher_shape = cipher.layout.shape if isinstance(cipher, Packed) else cipher.shape
    if len(plain.indices) != 2 or j not in plain.indices or j not in cipher_indices:
        return None
    (i,) = plain.indices.replace(j, "")
    batch = cipher_indices.replace(j, "")
    if i in cipher_indices or i not in c.out or any(b not in c.out for b in batch):
        return None
    if tuple(sizes[x] for x in cipher_indices) != tuple(cipher_shape) or sizes[i] < 2 and sizes[j] < 2:
        return None
    d = max(next_pow2(sizes[i]), next_pow2(sizes[j]))
    if d > slots or d < 2:
        return None
    outer, inner = _split_batch(batch, d, sizes, slots)
    if outer and d * math.prod(next_pow2(sizes[b]) for b in inner) != slots:
        return None  # tiles must fill their ciphertexts, or a rotation would cross into the next tile
    return plain, cipher, i, j, batch


def _split_batch(batch: str, d: int, sizes: dict, slots: int) -> tuple[str, str]:
    """(outer, inner): the batch axes (of size > 1) that tile ciphertexts, and the trailing ones that fit one
    ciphertext beside the d slots of j."""
    axes = [b for b in batch if sizes[b] > 1]
    inner, block = [], d
    while axes and block * next_pow2(sizes[axes[-1]]) <= slots:
        block *= next_pow2(sizes[axes[-1]])
        inner.insert(0, axes.pop())
    return "".join(axes), "".join(inner)


def _input_layout(cipher_indices: str, j: str, batch: str, d: int, sizes: dict, slots: int) -> Layout:
    outer, inner = _split_batch(batch, d, sizes, slots)
    axis = lambda b: Dim(b, next_pow2(sizes[b]), "axis", sizes[b])  # noqa: E731
    dims = tuple(map(axis, outer)) + (Dim(j, d, "axis", sizes[j]),) + tuple(map(axis, inner))
    return Layout(dims, slots, cipher_indices, tuple(sizes[x] for x in cipher_indices))


def replicas_for(d: int, span: int) -> int:
    """Copies m of each output row: min(d, span / d), the most the span's slots hold (1 when d == span)."""
    return max(1, min(d, span // d))


@lru_cache(maxsize=32)
def _nonzero_diagonals(rows: int, cols: int, d: int, baby: int, giant: int, replicas: int) -> tuple[int, ...]:
    """The diagonal rows that a rows x cols matrix zero-padded to d x d leaves nonzero (remembered: the strategies
    tried on one contraction ask for the same, and at d = 4096 each answer costs half a second)."""
    if rows == d and cols == d:  # no padding: every diagonal holds matrix entries
        return tuple(range(baby * giant))
    op = Diagonals("", "", d, baby, giant, replicas, d * replicas)
    return tuple(np.flatnonzero(diagonals(np.ones((rows, cols)), op).any(axis=1)).tolist())


def lower_bsgs(lw: Lowerer, c: Contraction) -> Packed | None:
    """Lower `c` by the diagonal method with BSGS and hoisted baby steps; None when it does not apply."""
    return _lower_diagonals(lw, c, baby_steps)


def lower_diagonal(lw: Lowerer, c: Contraction) -> Packed | None:
    """Lower `c` by the plain diagonal method (Halevi-Shoup): every diagonal's rotation of x, all hoisted, no
    giant steps (more rotation keys than BSGS, fewer levels of rotation after the products)."""
    return _lower_diagonals(lw, c, lambda n: n)


def _lower_diagonals(lw: Lowerer, c: Contraction, baby_of) -> Packed | None:
    """The diagonal method with `baby_of(n)` baby steps for n diagonals per replica; None when it does not apply."""
    found = bsgs_shape(c, lw.slots)
    if found is None:
        return None
    plain, cipher, i, j, batch = found
    sizes, builder = c.size, lw.builder
    d = max(next_pow2(sizes[i]), next_pow2(sizes[j]))
    cipher_indices = cipher.layout.indices if isinstance(cipher, Packed) else cipher.indices
    layout = _input_layout(cipher_indices, j, batch, d, sizes, lw.slots)
    if isinstance(cipher, Packed):
        if cipher.layout != layout:
            return None
        xs = cipher.cts
    else:
        xs = lw.load_free(cipher, layout).cts
    outer = layout.position(j)
    stride = layout.stride(j)
    span = lw.slots // stride
    replicas = replicas_for(d, span)
    baby = baby_of(d // replicas)
    giant = d // replicas // baby
    shift = replicas * stride  # a baby step, in slots
    src = plain.name
    if plain.indices != i + j:
        src = f"{plain.name}_{i}{j}"
        lw.program.append(PlainExpr(src, f"{plain.indices}->{i}{j}", (plain.name,)))
    op = Diagonals(f"diag{len(lw.program)}_{src}", src, d, baby, giant, replicas, d * replicas)
    lw.program.append(op)
    reps = tuple(Dim(builder.fresh_dim_name(), dim.size, "rep") for dim in layout.dims[outer + 1:])
    diag_layout = Layout((Dim(i, op.span, "axis", op.span),) + reps, lw.slots, i, (op.span,))
    nonzero = _nonzero_diagonals(sizes[i], sizes[j], d, baby, giant, replicas)
    groups: dict[int, list[int]] = {}
    for k in nonzero:
        groups.setdefault(k // baby, []).append(k % baby)
    needed = sorted({b for bs in groups.values() for b in bs if b})
    rotated = [{0: x} for x in xs]
    for x, rotations in zip(xs, rotated):
        if needed:
            digits = builder.emit(RotatePrecompute, x)
            rotations.update({b: builder.emit(HoistedRotate, x, digits, b * shift) for b in needed})
    parts: list[list[int]] = [[] for _ in xs]
    for g, bs in sorted(groups.items()):
        products: list[list[int]] = [[] for _ in xs]
        for b in bs:  # one diagonal over every ciphertext before the next: its plaintext is encoded once
            diagonal = PlainSlice(op.out, diag_layout, g * baby + b)
            for rotations, terms in zip(rotated, products):
                terms.append(builder.emit(MulPlain, rotations[b], diagonal))
        for terms, partial in zip(products, parts):
            inner = builder.sum_values(terms)
            inner = inner if builder.late_rescale else builder.emit(Rescale, inner)
            partial.append(builder.emit(Rotate, inner, g * baby * shift) if g else inner)
    outs = []
    for partial in parts:
        out = builder.sum_values(partial)
        step = 1
        while step < replicas:
            out = builder.emit(Add, out, builder.emit(Rotate, out, step * stride))
            step *= 2
        if builder.late_rescale:  # the giant steps and the rotate-and-sum ran at the products' scale
            out = builder.emit(Rescale, out)
        outs.append(out)
    out_dims = layout.dims[:outer] + (Dim(i, d, "axis", sizes[i]),)
    if replicas > 1:
        out_dims += (Dim(builder.fresh_dim_name(), replicas, "junk"),)
    out_dims += layout.dims[outer + 1:]
    out_indices = "".join(dim.name for dim in layout.dims[:outer]) + i + "".join(
        dim.name for dim in layout.dims[outer + 1:])
    return Packed(tuple(outs), Layout(out_dims, lw.slots, out_indices, tuple(sizes[x] for x in out_indices)))
