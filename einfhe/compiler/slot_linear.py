"""A linear map between the slots of one ciphertext, by its generalized diagonals and baby-step giant-step.

A map given entry by entry (output slot, input slot, weight) is out[s] = sum_r diag_r[s] * in[s + r], r the
input slot minus the output slot modulo the period (both images repeat with a period that divides the larger
one's). A convolution in the channel-packed layout (einfhe.compiler.image_layout) has one diagonal per pair of
(channel-group shift, kernel offset), so a 3x3 convolution over C channels has about 9*C of them, whatever the
image size; padding, strides and the gap are zeros of the diagonals. The diagonals run by baby-step giant-step
(Halevi and Shoup 2014): r = g + b with b = r mod B; the baby rotations of the input share one hoisted
decomposition, each giant step sums its baby terms times the diagonals pre-rotated by -g, rescales, and rotates
once by g. B is the power of two that minimizes the rotations (a hoisted one priced at HOISTED_SHARE of one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..layout import natural_layout
from ..plan import HoistedRotate, MulPlain, PlainSlice, Rescale, Rotate, RotatePrecompute

__all__ = ["SlotLinear", "slot_linear", "HOISTED_SHARE"]

HOISTED_SHARE = 0.5  # a hoisted rotation's price as a share of a plain one (its decomposition is shared)


@dataclass(frozen=True)
class SlotLinear:
    """A slot-to-slot linear map as baby-step giant-step: `baby` and `giant` offsets and, for each giant offset in
    order, its baby offsets and the rows of `plain` (pre-rotated diagonals) that multiply them."""

    period: int
    baby: tuple[int, ...]
    giant: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]
    plain: np.ndarray

    @property
    def diagonals(self) -> int:
        """Nonzero diagonals (plaintext products)."""
        return int(self.plain.shape[0])

    def rotations(self) -> int:
        """Rotations one application runs (baby ones hoisted, giant ones plain)."""
        return sum(1 for b in self.baby if b) + sum(1 for g, _ in self.giant if g)

    def lower(self, builder, src: int, name: str, slots: int) -> int:
        """Emit the steps applying the map to value `src` with the diagonals as plain operand `name`; return the
        (rescaled) output value."""
        layout = natural_layout((self.period,), slots, "s")
        babies = {0: src}
        moved = [b for b in self.baby if b]
        if moved:
            digits = builder.emit(RotatePrecompute, src)
            babies.update({b: builder.emit(HoistedRotate, src, digits, b) for b in moved})
        parts = []
        for g, terms in self.giant:
            products = [builder.emit(MulPlain, babies[b], PlainSlice(name, layout, row)) for b, row in terms]
            part = builder.emit(Rescale, builder.sum_values(products))
            parts.append(builder.emit(Rotate, part, g) if g else part)
        return builder.sum_values(parts)


def _diagonals(out_slots, in_slots, weights, period: int) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero diagonals of the entries: their offsets r and an array (len(r), period) of their values."""
    offsets = (np.asarray(in_slots) - np.asarray(out_slots)) % period
    unique, row = np.unique(offsets, return_inverse=True)
    values = np.zeros((unique.size, period))
    np.add.at(values, (row, np.asarray(out_slots) % period), np.asarray(weights, dtype=np.float64))
    keep = np.any(values != 0, axis=1)
    return unique[keep], values[keep]


def _baby_block(offsets: np.ndarray, period: int) -> int:
    """The power-of-two baby block B that minimizes hoisted baby rotations plus plain giant rotations."""
    best, best_price = 1, float("inf")
    block = 1
    while block <= period:
        baby = np.unique(offsets % block)
        giant = np.unique(offsets - offsets % block)
        price = HOISTED_SHARE * np.count_nonzero(baby) + np.count_nonzero(giant)
        if price < best_price:
            best, best_price = block, price
        block *= 2
    return best


def slot_linear(out_slots, in_slots, weights, period: int, out_period: int | None = None) -> SlotLinear:
    """The map out[out_slots[k]] += weights[k] * in[in_slots[k]] on images repeating every `period` slots. With
    `out_period` (a divisor of the period) the output is written in every copy of that period, so it repeats as
    its own layout requires; without it only the first copy holds the output."""
    out_slots, in_slots = np.asarray(out_slots, dtype=np.int64), np.asarray(in_slots, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    if not out_slots.shape == in_slots.shape == weights.shape:
        raise ModelError("a slot map needs as many output slots, input slots and weights")
    if out_period and out_period < period:
        copies = np.arange(period // out_period) * out_period
        out_slots = (out_slots[None, :] + copies[:, None]).reshape(-1)
        in_slots, weights = np.tile(in_slots, copies.size), np.tile(weights, copies.size)
    offsets, values = _diagonals(out_slots, in_slots, weights, period)
    block = _baby_block(offsets, period) if offsets.size else 1
    babies = offsets % block
    rows, giant = [], []
    for g in np.unique(offsets - babies):
        terms = []
        for r in offsets[offsets - babies == g]:
            terms.append((int(r - g), len(rows)))
            rows.append(np.roll(values[int(np.searchsorted(offsets, r))], int(g)))
        giant.append((int(g), tuple(terms)))
    plain = np.array(rows) if rows else np.zeros((0, period))
    return SlotLinear(period, tuple(int(b) for b in np.unique(babies)), tuple(giant), plain)
