"""The iteration-space strategy (general): both operands in the joint index space, one slot-wise product,
contracted indices summed by additions across ciphertexts and rotate-and-sum within (the moves are
`einfhe.compiler.builder`'s).

The recipe is EinHops' (Rezaei et al., "EinHops: Einsum notation for expressive homomorphic operations on
RNS-CKKS tensors", 2025, Sec. 4): bring both operands into the joint index space of the contraction,
multiply slot-wise, and reduce each contracted index by rotate-and-sum (log2 steps per index), with two
changes. Free operands (fresh cipher inputs, plaintexts) are packed directly in the joint layout by whoever
holds them, so replication and axis permutation cost nothing; and a joint layout larger than one ciphertext
is tiled over several, a contracted index that crosses ciphertexts being summed by additions.

An operand whose layout is fixed (a previous step's result, or a tensor the user already encrypted) keeps
it: the joint layout is that layout with the other operand's indices placed outside it (free, since a
layout smaller than the slot count repeats itself, and tiles are reused), except that a new output index
that fits in a replicated dimension of it takes that dimension's place (no ciphertext added). When both are
fixed, one is moved by a masked-rotation relayout (one level, one rotation per distinct slot offset).
"""

from __future__ import annotations

from ...layout import Layout
from ...plan import LevelReduce, value_levels
from ..builder import Packed
from .base import Contraction, FreeCipher, Lowerer, PlainValue, Value

__all__ = ["lower_iteration_space"]


def _operand_cts(lw: Lowerer, value: Value, joint: Layout) -> list:
    """Ciphertexts (or plaintext references) of `value` for each ciphertext of `joint`."""
    builder = lw.builder
    if isinstance(value, Packed):
        target = builder.restrict(joint, value.layout.indices, value.layout.shape)
        moved = builder.relayout(value, target)
        return [moved.cts[c] for c in builder.ct_map(joint, target)]
    if isinstance(value, PlainValue):
        return builder.plain_refs(value.name, value.indices, value.shape, joint)
    layout = builder.restrict(joint, value.indices, value.shape)
    mapping = builder.ct_map(joint, layout)
    packed = lw.load_free(value, layout)
    return [packed.cts[c] for c in mapping]


def _reduce_last(lw: Lowerer, value: Packed, names: str, final: bool) -> Packed:
    """Sum out `names`; when this product-free reduction ends a plan that has spent no level, drop a level
    first (free: every context has at least one), so the rotations work on one RNS tower fewer."""
    builder = lw.builder
    if final and names and max(value_levels(builder.steps).values(), default=0) == 0:
        value = Packed(tuple(builder.emit(LevelReduce, ct) for ct in value.cts), value.layout)
    return builder.reduce(value, names)


def lower_iteration_space(lw: Lowerer, c: Contraction) -> Packed:
    """Lower a contraction in its joint iteration space (EinHops' recipe, with client-side replication)."""
    builder, sizes = lw.builder, c.size
    args = list(c.args)
    fixed = [a for a in args if isinstance(a, Packed)]
    if len(args) == 1 and fixed:
        present = {d.name for d in fixed[0].layout.dims}
        return _reduce_last(lw, fixed[0], "".join(i for i in c.reduced if i in present), c.final)
    base = max(fixed, key=lambda p: p.layout.block) if fixed else None
    joint = builder.joint_layout(c.out, c.reduced, sizes, base.layout if base else None)
    others = [a for a in args if a is not base]
    if base is None:
        first = others.pop(next(i for i, a in enumerate(others) if isinstance(a, FreeCipher)))
        left = _operand_cts(lw, first, joint)
    else:
        left = builder.align(base, joint)
    present = {d.name for d in joint.dims}
    to_sum = "".join(i for i in c.reduced if i in present)
    if others:
        return builder.multiply_reduce(left, _operand_cts(lw, others[0], joint), joint, to_sum)
    return _reduce_last(lw, Packed(tuple(left), joint), to_sum, c.final)
