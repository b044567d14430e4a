"""Matrix products token by token in the packed transformer layout (einfhe.compiler.transformer.packed): every
token's row of features occupies `row` consecutive slots, the features at offsets 0..n-1 and anything after them
ignored, and y = x M for an n x n matrix M is the diagonal method over each row (Halevi and Shoup, CRYPTO 2014 and
2018) with baby and giant steps, i = g B + b:

    y[j] = sum_{i<n} M[(j+i) mod n, j] x[(j+i) mod n].

A term with j + i < n reads x at offset j + i (part A: baby rotation b, giant rotation g B); the others read it at
j + i - n (part B: baby rotation b - (B - 1), giant rotation g B - n + B - 1). So every plaintext entry lies in
the row of the output slot it serves, at offsets 0..n + B - 3, and meets only offsets 0..n-1 of its own row: a
row's tail is never read (junk there is harmless), every token takes the same plaintext pattern, and no rotation
carries one token's features into another's. The baby rotations (2B - 2, both signs) share one key-switch
precomputation (hoisting); the giant ones (at most 2 ceil(n / B) - 1) rotate each group's sum after its rescale.
One level. The output holds exact zeros past offset n.

Blocks of tokens can take different matrices: a ciphertext of `per` blocks (each `tokens x row` slots) uses the
pattern of matrix [k, a, p] in block p for output ciphertext k and input ciphertext a, so one product computes
several column chunks of a wide matrix (a feed-forward layer's first product, from an input repeated in every
block) or sums several row chunks (its second, with `block_sum` adding the blocks up).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ModelError
from ...layout import Dim, Layout
from ...plan import Add, HoistedRotate, MulPlain, PlainSlice, Rescale, Rotate, RotatePrecompute
from ..strategies.bsgs import baby_steps
from .pieces import PieceBuilder

__all__ = ["row_matmul", "block_sum", "pattern_layout", "row_span"]


def row_span(n: int) -> int:
    """Slots a row must span for an n x n product: n + B - 2 (B the baby steps), at least n."""
    return max(n, n + baby_steps(n) - 2)


def pattern_layout(per: int, tokens: int, row: int, slots: int) -> Layout:
    """The layout of one plaintext pattern: `per` blocks of a (row,) pattern, repeated over the block's tokens."""
    dims = (Dim("c", per, "axis", per), Dim("_t", tokens, "rep"), Dim("f", row, "axis", row))
    return Layout(dims, slots, "cf", (per, row))


def _patterns(matrices: np.ndarray, row: int):
    """{(k, a, part, g, b): (per, row) pattern} for every nonzero pattern of matrices (out, in, per, n, n)."""
    outs, ins, per, n, _ = matrices.shape
    baby = baby_steps(n)
    shift = baby - 1
    j = np.arange(n)
    found = {}
    for i in range(n):
        g, b = divmod(i, baby)
        wrap = j + i >= n
        for part, keep, read, anchor in (("A", ~wrap, j + i, j + g * baby),
                                         ("B", wrap, j + i - n, j + g * baby - n + shift)):
            if not keep.any():
                continue
            for k in range(outs):
                for a in range(ins):
                    pattern = np.zeros((per, row))
                    pattern[:, anchor[keep]] = matrices[k, a][:, read[keep], j[keep]]
                    if pattern.any():
                        found[(k, a, part, g, b)] = pattern
    return found


def row_matmul(pb: PieceBuilder, xs: tuple[int, ...], matrices: np.ndarray, layout: Layout) -> tuple[int, ...]:
    """Output ciphertexts k = 0.. of sum over input ciphertexts a of (x_a per row) M[k, a, block] (matrices of
    shape (outputs, inputs, per, n, n), (in, out) convention), rows laid out as `layout` (`pattern_layout`)."""
    matrices = np.asarray(matrices, dtype=np.float64)
    outs, ins, per, n, n2 = matrices.shape
    row = layout.dims[-1].size
    if n != n2 or ins != len(xs) or row_span(n) > row:
        raise ModelError(f"a row product needs square matrices of the input's ciphertexts and rows of at least "
                         f"{row_span(n)} slots", shape=matrices.shape, inputs=len(xs), row=row)
    baby = baby_steps(n)
    shift = baby - 1
    patterns = _patterns(matrices, row)
    keys = sorted(patterns)
    name = pb.plain(np.stack([patterns[key] for key in keys]) if keys else np.zeros((1, per, row)))
    emit = pb.builder.emit
    reads = {(a, b if part == "A" else b - shift) for _, a, part, _, b in keys}
    rotated = {}
    for a, x in enumerate(xs):
        offsets = sorted(rho for src, rho in reads if src == a and rho)
        digits = emit(RotatePrecompute, x) if offsets else None
        rotated.update({(a, rho): emit(HoistedRotate, x, digits, rho) for rho in offsets})
        rotated[(a, 0)] = x
    outputs = []
    for k in range(outs):
        partials = []
        for part in ("A", "B"):
            for g in range(math.ceil(n / baby)):
                terms = [emit(MulPlain, rotated[(a, b if part == "A" else b - shift)],
                              PlainSlice(name, layout, index))
                         for index, (kk, a, pp, gg, b) in enumerate(keys) if (kk, pp, gg) == (k, part, g)]
                if not terms:
                    continue
                group = emit(Rescale, pb.builder.sum_values(terms))
                offset = g * baby if part == "A" else g * baby - n + shift
                partials.append(emit(Rotate, group, offset) if offset else group)
        if not partials:
            raise ModelError("a row product with an all-zero matrix", output=k)
        outputs.append(pb.builder.sum_values(partials))
    return tuple(outputs)


def block_sum(pb: PieceBuilder, cts: tuple[int, ...], per: int, block: int) -> int:
    """The ciphertexts added up and their `per` blocks of `block` slots summed by rotations (per a power of two):
    every block then holds the total."""
    emit = pb.builder.emit
    total, step = pb.builder.sum_values(list(cts)), 1
    while step < per:
        total = emit(Add, total, emit(Rotate, total, step * block))
        step *= 2
    return total
