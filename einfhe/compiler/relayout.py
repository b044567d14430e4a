"""Where a relayout takes each slot from: index arithmetic over whole ciphertexts of the target layout.

For every slot of the target the tensor element it must hold (or none: padding, zeros) is found from the
target's dimensions by unravelling the slot indices of a whole ciphertext at once; the source slot holding that
element comes from the source's array of element positions. Slots that take their element from the same source
ciphertext at the same rotation offset form one masked rotation (`Move`): `PlanBuilder.relayout` emits one
rotation per distinct (source ciphertext, offset) and one mask per move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..layout import Layout
from ..plan import Mask

__all__ = ["Move", "relayout_moves", "slot_mask"]


@dataclass(frozen=True)
class Move:
    """Slots of one target ciphertext filled from source ciphertext `src_ct` rotated by `offset`."""

    src_ct: int
    offset: int
    ranges: tuple[tuple[int, int], ...]


def slot_mask(positions: np.ndarray, block: int, slots: int) -> Mask:
    """The 0/1 mask that is 1 at `positions` of every `block`-slot copy filling `slots` slots."""
    copies = max(1, slots // block)
    every = (np.sort(np.asarray(positions))[None, :] + block * np.arange(copies)[:, None]).reshape(-1)
    if not len(every):
        return Mask((), slots)
    starts = np.flatnonzero(np.concatenate(([True], np.diff(every) != 1)))
    ends = np.concatenate((starts[1:], [len(every)]))
    return Mask(tuple(zip(every[starts].tolist(), (every[ends - 1] + 1).tolist())), slots)


def _elements(layout: Layout, flat: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """For flat slot positions of `layout`: which hold an element (not padding or a zero copy), and its index."""
    local = flat % layout.block
    held = np.ones(flat.shape, dtype=bool)
    coords = {index: np.zeros(flat.shape, dtype=np.int64) for index in layout.indices}
    if layout.dims:
        for dim, position in zip(layout.dims, np.unravel_index(local, [d.size for d in layout.dims])):
            if dim.kind == "axis":
                held &= position < dim.extent
                coords[dim.name] = position
            elif dim.kind == "zero":
                held &= position == 0
    return held, tuple(coords[index][held] for index in layout.indices)


def relayout_moves(source: Layout, target: Layout) -> Iterator[list[Move]]:
    """For each ciphertext of `target` in turn, the masked rotations of `source`'s ciphertexts that build it,
    ordered by (source ciphertext, offset); both layouts hold the same tensor."""
    slots, period = target.slots, source.period
    source_positions = source.position_array()
    slot_index = np.arange(slots, dtype=np.int64)
    for dst_ct in range(target.num_cts):
        held, element = _elements(target, dst_ct * slots + slot_index)
        dst_slot = slot_index[held]
        if not len(dst_slot):
            yield []
            continue
        flat = source_positions[element] if element else np.full(dst_slot.shape, int(source_positions))
        src_ct, offset = flat // slots, (flat % slots - dst_slot) % period
        order = np.lexsort((dst_slot, offset, src_ct))
        src_ct, offset, dst_slot = src_ct[order], offset[order], dst_slot[order]
        new_move = np.concatenate(([True], (np.diff(src_ct) != 0) | (np.diff(offset) != 0)))
        new_range = new_move | np.concatenate(([True], np.diff(dst_slot) != 1))
        starts = np.flatnonzero(new_range)
        ends = np.concatenate((starts[1:], [len(dst_slot)]))
        range_pairs = zip(dst_slot[starts].tolist(), (dst_slot[ends - 1] + 1).tolist())
        groups: list[tuple[int, int, list[tuple[int, int]]]] = []
        for opens, ct, shift, pair in zip(new_move[starts].tolist(), src_ct[starts].tolist(),
                                          offset[starts].tolist(), range_pairs):
            if opens:
                groups.append((ct, shift, []))
            groups[-1][2].append(pair)
        yield [Move(ct, shift, tuple(ranges)) for ct, shift, ranges in groups]
