"""The transformer's non-linear blocks as plan pieces: a `Plan` over one cipher operand (two for a residual sum,
`PieceBuilder.extra_input`) plus the plain operands it registers, built with `PlanBuilder` and run like any plan.

A piece that reduces rows (softmax, LayerNorm) first moves its input into the natural layout of its logical shape
(a relayout by masked rotations: one level) unless its rows already lie innermost, every dimension a tensor axis
(`PieceBuilder.rows`), so the reduced axis is the innermost slot axis, padded with zeros; GELU, slot-wise, only
relayouts an input that holds junk. A row
sum broadcast over that axis (`PieceBuilder.row_sum`) is log2(n) rotations and additions that leave each row's sum in
its first slot, a selector plaintext that keeps those slots (times a weight, e.g. 1/n for a mean: one level), and
log2(n) rotations back that copy it over the row. Polynomials are OpenFHE's Chebyshev series; Newton's steps are
ciphertext products. The arithmetic is that of `einfhe.compiler.transformer.approx`, which evaluates it in floating
point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ModelError
from ...layout import Layout, natural_layout
from ...plan import Add, AddPlain, CipherInput, Mul, PlainInput, PlainSlice, Plan, Rescale, Rotate, Sub
from ..builder import Packed, PlanBuilder
from ..layers import ChebyshevActivation
from .approx import PolyGelu, PolyLayerNorm, PolySoftmax
from .keymask import KeyMask

__all__ = ["Piece", "PieceBuilder", "softmax_piece", "layernorm_piece", "gelu_piece"]

MAX_PIECE_CTS = 1 << 12


@dataclass(frozen=True)
class Piece:
    """A plan over one cipher operand (operand 0) and the plain operands it registered, in operand order (arrays,
    or `KeyMask`s resolved for a sequence's real token count at run time)."""

    plan: Plan
    plains: tuple[np.ndarray | KeyMask, ...]

    def operands(self, encrypted) -> tuple:
        """The operand list for `einfhe.run(ctx, piece.plan, *piece.operands(x))`."""
        return (encrypted, *self.plains)


class PieceBuilder:
    """A `PlanBuilder` over one cipher input, with plain operands registered as it goes and the slot-wise
    arithmetic of the transformer blocks (products, constants, row sums, Newton's steps)."""

    def __init__(self, layout: Layout) -> None:
        self.builder = PlanBuilder(layout.slots, MAX_PIECE_CTS)
        self.operands: list = [CipherInput(0, layout)]
        self.plains: list[np.ndarray | KeyMask] = []
        self.input = self.builder.load(0, layout)

    def extra_input(self, layout: Layout) -> Packed:
        """A second cipher operand (operand 1), registered before any plain operand."""
        if self.plains or len(self.operands) != 1:
            raise ModelError("a piece's second cipher input comes before its plain operands")
        self.operands.append(CipherInput(1, layout))
        return self.builder.load(1, layout)

    def natural(self, value: Packed) -> Packed:
        """The value in the natural (row-major, zero-padded) layout of its shape: a relayout where it is not."""
        target = natural_layout(value.layout.shape, value.layout.slots, value.layout.indices)
        return value if value.layout == target else self.builder.relayout(value, target)

    def rows(self, value: Packed) -> Packed:
        """The value in a layout whose rows a row sum can reduce: kept when every dimension is a tensor axis and
        the innermost is the last axis (each row's slots, padding included, are its own), else the natural one."""
        dims = value.layout.dims
        ready = dims and all(d.kind == "axis" for d in dims) and dims[-1].name == value.layout.indices[-1]
        return value if ready else self.natural(value)

    def plain(self, array: np.ndarray | KeyMask) -> str:
        """Register a plain operand (an array, or a key mask kept as one); return its name in the plan."""
        self.plains.append(array if isinstance(array, KeyMask) else np.asarray(array, dtype=np.float64))
        self.operands.append(PlainInput(len(self.operands), tuple(self.plains[-1].shape)))
        return f"op{len(self.operands) - 1}"

    def scale(self, value: Packed, array) -> Packed:
        """Slot-wise product with a plain array of the value's shape (broadcast from a scalar or a row; a key mask of
        the value's shape): one level."""
        if isinstance(array, KeyMask) and array.shape != value.layout.shape:
            raise ModelError(f"a key mask of shape {array.shape} cannot scale a value of shape {value.layout.shape}")
        return self.builder.scale(value, self.plain(
            array if isinstance(array, KeyMask) else np.broadcast_to(array, value.layout.shape)))

    def add_const(self, value: Packed, array) -> Packed:
        """Slot-wise sum with a plain array of the value's shape (broadcast from a scalar or a row): no level."""
        return self.builder.add_plain(value, self.plain(np.broadcast_to(array, value.layout.shape)))

    def mul(self, a: Packed, b: Packed) -> Packed:
        """Slot-wise product of two values in one layout, relinearized and rescaled: one level."""
        emit = self.builder.emit
        return Packed(tuple(emit(Rescale, emit(Mul, x, y)) for x, y in zip(a.cts, b.cts)), a.layout)

    def add(self, a: Packed, b: Packed) -> Packed:
        """Slot-wise sum of two values in one layout."""
        return self.builder.add_values(a, b)

    def sub(self, a: Packed, b: Packed) -> Packed:
        """Slot-wise difference of two values in one layout."""
        return Packed(tuple(self.builder.emit(Sub, x, y) for x, y in zip(a.cts, b.cts)), a.layout)

    def const_minus(self, constant: float, value: Packed) -> Packed:
        """constant - value, slot-wise (no level: the negation is a subtraction from a zero made of the value)."""
        emit = self.builder.emit
        negated = Packed(tuple(emit(Sub, emit(Sub, c, c), c) for c in value.cts), value.layout)
        return self.add_const(negated, constant)

    def chebyshev(self, value: Packed, series: ChebyshevActivation) -> Packed:
        """One Chebyshev series on every ciphertext of the value."""
        return self.builder.chebyshev(value, [(series.coeffs, series.lo, series.hi)] * len(value.cts))

    def row_sum(self, value: Packed, weight: float | KeyMask) -> Packed:
        """weight * (sum over the innermost axis), copied over every slot of its row: one level (the selector; a
        "mean" key mask's selector weighs each row by 1 / its real length)."""
        n = value.layout.dims[-1].size if value.layout.dims else 1
        emit, cts = self.builder.emit, list(value.cts)
        step = 1
        while step < n:
            cts = [emit(Add, c, emit(Rotate, c, step)) for c in cts]
            step *= 2
        selector = weight
        if not isinstance(weight, KeyMask):
            selector = np.zeros(value.layout.shape)
            selector[..., 0] = weight
        firsts = self.scale(Packed(tuple(cts), value.layout), selector)
        cts, step = list(firsts.cts), 1
        while step < n:
            cts = [emit(Add, c, emit(Rotate, c, -step)) for c in cts]
            step *= 2
        return Packed(tuple(cts), value.layout)

    def fill_unsummed(self, sums: Packed, constant: float) -> Packed:
        """A `row_sum` result with `constant` added in the slots no row's sum reaches (no level): there the sum is 0
        up to a bootstrap's noise, which a series fitted away from 0 (a reciprocal) would blow up past the next
        bootstrap's headroom; `constant`, inside the series' range, keeps those slots small."""
        layout, n = sums.layout, sums.layout.dims[-1].size if sums.layout.dims else 1
        selector = np.zeros(layout.tensor_shape)
        selector[..., 0] = 1.0
        covered, step = layout.pack(selector) != 0, 1
        while step < n:  # the slots row_sum's rotations back copy each row's first slot to
            covered = covered | np.roll(covered, step, axis=-1)
            step *= 2
        name = self.plain(np.where(covered, 0.0, constant))
        vector = natural_layout((layout.slots,), layout.slots, "s")
        return Packed(tuple(self.builder.emit(AddPlain, ct, PlainSlice(name, vector, index))
                            for index, ct in enumerate(sums.cts)), layout)

    def plan(self, spec: str, output: Packed) -> Piece:
        """The piece: every step emitted, `output` its result."""
        plan = Plan(spec=spec, slots=output.layout.slots, operands=tuple(self.operands), plain_program=(),
                    steps=tuple(self.builder.steps), outputs=output.cts, output_layout=output.layout,
                    strategy="transformer-block")
        return Piece(plan, tuple(self.plains))


def _check_last_axis(layout: Layout, length: int, what: str) -> None:
    """Refuse an input whose last axis is not the one the block was fitted for."""
    if not layout.shape or layout.shape[-1] != length:
        raise ModelError(f"{what} was fitted for rows of {length}, the input's last axis is "
                         f"{layout.shape[-1] if layout.shape else 'missing'}", layout=str(layout))


def softmax_piece(layout: Layout, softmax: PolySoftmax, keys: KeyMask | None = None) -> Piece:
    """softmax over the last axis of a cipher tensor encrypted in `layout` (scores in the fitted range); with a
    "keys" mask (the row packing's scores, padded keys' scores zero), over the real keys only: each row centred on
    its real scores' mean and the padded keys' exps zeroed, whatever the length the masks are resolved for."""
    _check_last_axis(layout, softmax.length, "the softmax")
    pb = PieceBuilder(layout)
    scores = pb.rows(pb.input)
    if keys is not None and (keys.kind != "keys" or keys.shape != scores.layout.shape):
        raise ModelError("the softmax's key mask must be a \"keys\" mask of the scores' shape",
                         shape=scores.layout.shape)
    mean = 1.0 / softmax.length if keys is None else KeyMask(keys.tokens, keys.heads, "mean")
    exps = pb.chebyshev(pb.sub(scores, pb.row_sum(scores, mean)), softmax.exp)
    last = scores.layout.dims[-1] if scores.layout.dims else None
    if keys is not None:
        exps = pb.scale(exps, keys)  # the padded keys' and the rows' padding's exps zeroed: one level
    elif last is not None and last.extent < last.size:
        exps = pb.scale(exps, 1.0)  # the padded keys' exp zeroed (the plain's padding is zero): one level
    sums = pb.fill_unsummed(pb.row_sum(exps, 1.0), softmax.reciprocal.hi)
    y = pb.chebyshev(sums, softmax.reciprocal)
    probs = pb.mul(exps, _newton_reciprocal(pb, sums, y, softmax.newton_steps))
    for _ in range(softmax.squarings):  # softmax(2z) = softmax(z)^2 / sum(softmax(z)^2)
        squares = pb.mul(probs, probs)
        sums = pb.fill_unsummed(pb.row_sum(squares, 1.0), softmax.renormal.hi)
        inverse = _newton_reciprocal(pb, sums, pb.chebyshev(sums, softmax.renormal), softmax.renormal_steps)
        probs = pb.mul(squares, inverse)
    return pb.plan(f"softmax[{layout.indices}]", probs)


def _newton_reciprocal(pb: PieceBuilder, sums: Packed, y: Packed, steps: int) -> Packed:
    """Newton's steps y (2 - s y) from the first guess y: two levels each."""
    for _ in range(steps):
        y = pb.mul(y, pb.const_minus(2.0, pb.mul(sums, y)))
    return y


def layernorm_piece(layout: Layout, norm: PolyLayerNorm) -> Piece:
    """LayerNorm over the last axis of a cipher tensor encrypted in `layout` (row variances in the fitted range)."""
    width = norm.gamma.shape[0]
    _check_last_axis(layout, width, "the LayerNorm")
    pb = PieceBuilder(layout)
    x = pb.rows(pb.input)
    mean = pb.row_sum(x, 1.0 / width)
    variance = pb.sub(pb.row_sum(pb.mul(x, x), 1.0 / width), pb.mul(mean, mean))
    variance = pb.fill_unsummed(pb.add_const(variance, norm.eps), norm.inverse_sqrt.hi)
    half = pb.scale(variance, 0.5)
    y = pb.chebyshev(variance, norm.inverse_sqrt)
    for _ in range(norm.newton_steps):  # 1.5 y - y^2 (v/2) y
        y = pb.sub(pb.scale(y, 1.5), pb.mul(pb.mul(y, y), pb.mul(half, y)))
    centred = pb.scale(pb.sub(x, mean), norm.gamma)  # gamma's zero padding clears the padded slots
    return pb.plan(f"layernorm[{layout.indices}]", pb.add_const(pb.mul(centred, y), norm.beta))


def gelu_piece(layout: Layout, activation: PolyGelu, bias: np.ndarray | None = None) -> Piece:
    """GELU slot-wise on a cipher tensor encrypted in `layout` (plus `bias` over its last axis first; inputs in the
    fitted range)."""
    pb = PieceBuilder(layout)
    x = pb.input if layout.clean else pb.natural(pb.input)  # slot-wise: any layout without junk will do
    x = x if bias is None else pb.add_const(x, bias)
    return pb.plan(f"gelu[{layout.indices}]", pb.chebyshev(x, activation.series))
