"""Tiling an axis that does not fit: where no plan fits a contraction (it needs more ciphertexts than `max_cts`, or
passes a budget), a free axis of a cipher operand (one that only this operand and the result carry) is split into
tiles, `k` -> (`t`, `k`); the einsum is compiled over the tiled shapes and the plan's input and output layouts keep
the user's shapes as views (`Layout.view`), so the client packs and gets back the tensors it named.

The first tile tried is the largest divisor of the axis whose tile of the operand fits one ciphertext, then smaller
ones: `ij,jk->ik` with a cipher 256 x 256 at 2,048 slots becomes `ij,jtk->itk`, 32 tiles of 8 columns, one
ciphertext each, where the unsplit einsum needed 8,192 ciphertexts.
"""

from __future__ import annotations

import string
from dataclasses import replace
from typing import Callable

import numpy as np

from ..errors import PlanError
from ..layout import next_pow2
from ..plan import CipherInput, Plan
from ..spec import EinsumSpec

__all__ = ["MAX_TRIES", "tile_candidates", "compile_tiled"]

MAX_TRIES = 4  # tilings compiled at most before the original refusal stands (each is a whole compile)


def tile_candidates(spec: EinsumSpec, splittable: list[int], slots: int) -> list[tuple[int, str, int]]:
    """(operand, axis letter, tile size) to try, the fewest tiles first: free axes of the `splittable` operands,
    each tile a divisor of the axis small enough for one tile of the operand to fit `slots`."""
    sizes = spec.sizes
    candidates = []
    for position in splittable:
        term = spec.inputs[position]
        for letter in dict.fromkeys(term):
            free = term.count(letter) == 1 and letter in spec.output
            if not free or sizes[letter] < 2 or any(letter in other for q, other in enumerate(spec.inputs)
                                                    if q != position):
                continue
            rest = int(np.prod([next_pow2(sizes[c]) for c in term if c != letter], dtype=np.int64))
            room = max(1, slots // max(1, rest))
            n = sizes[letter]
            tiles = [m for m in range(min(n - 1, room), 0, -1) if n % m == 0]
            candidates += [(position, letter, m) for m in tiles[:2]]
    return sorted(candidates, key=lambda c: spec.sizes[c[1]] // c[2])[:MAX_TRIES]


def _tiled(spec: EinsumSpec, position: int, letter: str, tile: int) -> tuple[str, tuple[int, ...]]:
    """The einsum with `letter` of operand `position` split into (tiles, `tile`), and that operand's tiled shape."""
    fresh = next(c for c in "t" + string.ascii_letters if c not in str(spec))  # "t" for tiles where it is free
    inputs = [t.replace(letter, fresh + letter) if q == position else t for q, t in enumerate(spec.inputs)]
    output = spec.output.replace(letter, fresh + letter)
    shape = []
    for index, n in zip(spec.inputs[position], spec.shapes[position]):
        shape += [n // tile, tile] if index == letter else [n]
    return ",".join(inputs) + "->" + output, tuple(shape)


def compile_tiled(spec: EinsumSpec, operands: list, splittable: list[int], slots: int,
                  compile_fn: Callable[..., Plan], refusal: PlanError) -> Plan:
    """Compile `spec` with one free axis of a cipher placeholder split into tiles (`compile_fn(subscripts,
    *operands)` compiles without tiling); raise `refusal` when no tiling compiles either."""
    for position, letter, tile in tile_candidates(spec, splittable, slots):
        subscripts, shape = _tiled(spec, position, letter, tile)
        tiled = [replace(op, shape=shape) if q == position else op for q, op in enumerate(operands)]
        try:
            plan = compile_fn(subscripts, *tiled)
        except PlanError:
            continue
        inputs = tuple(replace(op, layout=replace(op.layout, view=spec.shapes[position]))
                       if isinstance(op, CipherInput) and op.operand == position else op for op in plan.operands)
        return replace(plan, operands=inputs, output_layout=replace(plan.output_layout, view=spec.output_shape))
    raise refusal
