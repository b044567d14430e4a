"""Compile an einsum over cipher and plain operands into a `Plan`.

Pipeline: `parse_einsum` validates the spec; each operand is normalized (a repeated index in a cipher
operand becomes a fresh index times a plain identity, one in a plain operand is taken as a diagonal in numpy;
size-1 axes broadcast by replication); opt_einsum orders the pairwise contractions; each contraction is
lowered by `PlanBuilder` (plain-only ones run in numpy on the server as a plain program).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Union

import numpy as np
import opt_einsum

from .errors import EinsumError, PlanError
from .layout import Dim, Layout
from .lower import Packed, PlanBuilder
from .plan import CipherInput, PlainExpr, PlainInput, Plan
from .spec import parse_einsum

__all__ = ["Cipher", "cipher", "compile_einsum", "DEFAULT_SLOTS", "DEFAULT_MAX_CTS"]

DEFAULT_SLOTS = 8192
DEFAULT_MAX_CTS = 1024


@dataclass(frozen=True)
class Cipher:
    """Placeholder for an encrypted operand: its shape, and its layout when it is already encrypted."""

    shape: tuple[int, ...]
    layout: Layout | None = None


def cipher(shape, layout: Layout | None = None) -> Cipher:
    """Describe a cipher operand of `shape` (the plan picks its layout unless `layout` fixes it)."""
    return Cipher(tuple(int(n) for n in shape), layout)


@dataclass(frozen=True)
class _Plain:
    name: str
    indices: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Free:
    operand: int
    indices: str
    shape: tuple[int, ...]


_Value = Union[_Plain, _Free, Packed]


def _operand_kind(operand) -> Cipher | None:
    """A `Cipher` for cipher operands (placeholders or encrypted tensors), None for plain ones."""
    if isinstance(operand, Cipher):
        return operand
    layout = getattr(operand, "layout", None)
    if isinstance(layout, Layout):
        return Cipher(tuple(layout.shape), layout)
    return None


def _relabel(layout: Layout, indices: str, sizes: dict[str, int]) -> Layout:
    """The same slots seen with new index letters; size-1 axes broadcast elsewhere are dropped."""
    rename = dict(zip(layout.indices, indices))
    dims = []
    for dim in layout.dims:
        if dim.kind == "axis":
            letter = rename[dim.name]
            if dim.extent == 1 and sizes[letter] > 1:
                continue
            dims.append(Dim(letter, dim.size, "axis", dim.extent))
        else:
            dims.append(Dim("_in" + dim.name, dim.size, dim.kind))
    named = {d.name for d in dims}
    keep = [(i, n) for i, n in zip(indices, layout.shape) if i in named or sizes[i] == 1]
    return Layout(tuple(dims), layout.slots, "".join(i for i, _ in keep), tuple(n for _, n in keep))


def _with_indices(layout: Layout, indices: str, sizes: dict[str, int]) -> Layout:
    """Re-express a result layout for the tensor with index string `indices`."""
    return Layout(layout.dims, layout.slots, indices, tuple(sizes[i] for i in indices))


def compile_einsum(
    subscripts: str,
    *operands,
    slots: int = DEFAULT_SLOTS,
    max_cts: int = DEFAULT_MAX_CTS,
    optimize: str = "auto",
) -> Plan:
    """Compile `subscripts` over operands (numpy arrays are plain; `cipher(...)`/encrypted tensors are cipher)."""
    if slots < 1 or slots & (slots - 1):
        raise EinsumError("slots must be a power of two", slots=slots)
    kinds = [_operand_kind(op) for op in operands]
    shapes = [k.shape if k is not None else np.shape(op) for k, op in zip(kinds, operands)]
    spec = parse_einsum(subscripts, *shapes)
    if all(k is None for k in kinds):
        raise EinsumError("no operand is encrypted: use numpy.einsum for plain tensors", spec=subscripts)
    for k in kinds:
        if k is not None and k.layout is not None and k.layout.slots != slots:
            raise EinsumError(
                f"an encrypted operand has {k.layout.slots} slots but the plan uses {slots}", spec=subscripts
            )
    sizes = spec.sizes
    spare = iter(c for c in string.ascii_letters if c not in sizes)
    builder = PlanBuilder(slots, max_cts)
    program: list[PlainExpr] = []
    plan_operands: list[CipherInput | PlainInput] = []
    values: list[_Value] = []
    fixed_loads: list[tuple[int, Layout]] = []

    for position, (raw, shape, kind) in enumerate(zip(spec.inputs, spec.shapes, kinds)):
        if kind is None:
            plan_operands.append(PlainInput(position, shape))
            effective = "".join(dict.fromkeys(i for i, n in zip(raw, shape) if n == sizes[i]))
            name = f"op{position}"
            if effective != raw:
                program.append(PlainExpr(f"p{position}", f"{raw}->{effective}", (name,)))
                name = f"p{position}"
            values.append(_Plain(name, effective, tuple(sizes[i] for i in effective)))
            continue
        renamed, seen = [], set()
        for index in raw:
            if index in seen:
                try:
                    fresh = next(spare)
                except StopIteration:
                    raise EinsumError("too many indices to rename repeated ones", spec=subscripts) from None
                sizes[fresh] = sizes[index]
                delta = f"d{position}{fresh}"
                program.append(PlainExpr(delta, "ij->ij", (f"delta:{sizes[index]}",)))
                values.append(_Plain(delta, index + fresh, (sizes[index], sizes[index])))
                index = fresh
            seen.add(index)
            renamed.append(index)
        renamed = "".join(renamed)
        if kind.layout is None:
            plan_operands.append(CipherInput(position, None))  # layout filled in when first used
            values.append(_Free(position, renamed, shape))
        else:
            relabeled = _relabel(kind.layout, renamed, sizes)
            plan_operands.append(CipherInput(position, kind.layout))
            fixed_loads.append((position, relabeled))
            values.append(builder.load(position, relabeled))
    chosen_layouts: dict[int, Layout] = {}

    def effective_indices(value: _Value) -> str:
        if isinstance(value, Packed):
            return value.layout.indices
        return value.indices if isinstance(value, _Plain) else "".join(
            i for i, n in zip(value.indices, value.shape) if n == sizes[i] or sizes[i] == 1
        )

    def load_free(value: _Free, layout: Layout) -> Packed:
        if value.operand in chosen_layouts:
            raise PlanError("a cipher operand is used twice", operand=value.operand)
        chosen_layouts[value.operand] = layout
        return builder.load(value.operand, layout)

    def operand_cts(value: _Value, joint: Layout) -> list:
        """Ciphertexts (or plaintext references) of `value` for each ciphertext of `joint`."""
        if isinstance(value, Packed):
            target = builder.restrict(joint, value.layout.indices, value.layout.shape)
            moved = builder.relayout(value, target)
            return [moved.cts[c] for c in builder.ct_map(joint, target)]
        if isinstance(value, _Plain):
            return builder.plain_refs(value.name, value.indices, value.shape, joint)
        layout = builder.restrict(joint, value.indices, value.shape)
        mapping = builder.ct_map(joint, layout)
        packed = load_free(value, layout)
        return [packed.cts[c] for c in mapping]

    terms = [effective_indices(v) for v in values]
    eq = ",".join(terms) + "->" + spec.output
    try:
        _, info = opt_einsum.contract_path(
            eq, *[tuple(sizes[i] for i in t) for t in terms], shapes=True, optimize=optimize
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise EinsumError(f"opt_einsum could not order this contraction: {exc}", spec=subscripts) from exc

    for contract_inds, _, step_str, _, _ in info.contraction_list:
        args = [values.pop(i) for i in contract_inds]
        lhs, out = step_str.split("->")
        step_terms = lhs.split(",")
        reduced = "".join(dict.fromkeys(i for t in step_terms for i in t if i not in out))
        if all(isinstance(a, _Plain) for a in args):
            name = f"t{len(program)}"
            program.append(PlainExpr(name, step_str, tuple(a.name for a in args)))
            values.append(_Plain(name, out, tuple(sizes[i] for i in out)))
            continue
        if len(args) > 2:
            raise PlanError("contractions are lowered pairwise", step=step_str)
        fixed = [a for a in args if isinstance(a, Packed)]
        if len(args) == 1 and fixed:
            result = fixed[0]
        else:
            base = max(fixed, key=lambda p: p.layout.block) if fixed else None
            joint = builder.joint_layout(out, reduced, sizes, base.layout if base else None)
            others = [a for a in args if a is not base]
            if base is None:
                first = others.pop(next(i for i, a in enumerate(others) if not isinstance(a, _Plain)))
                left = operand_cts(first, joint)
            else:
                left = builder.align(base, joint)
            present = {d.name for d in joint.dims}
            to_sum = "".join(i for i in reduced if i in present)
            if others:
                result = builder.multiply_reduce(left, operand_cts(others[0], joint), joint, to_sum)
            else:
                result = builder.reduce(Packed(tuple(left), joint), to_sum)
        if len(args) == 1 and fixed:
            present = {d.name for d in result.layout.dims}
            result = builder.reduce(result, "".join(i for i in reduced if i in present))
        values.append(Packed(result.cts, _with_indices(result.layout, out, sizes)))

    (final,) = values
    if isinstance(final, _Free):
        joint = builder.joint_layout(spec.output, "", sizes, None)
        final = load_free(final, builder.restrict(joint, final.indices, final.shape))
    layout = _with_indices(final.layout, spec.output, sizes)
    for position, layout_in in enumerate(plan_operands):
        if isinstance(layout_in, CipherInput) and layout_in.layout is None:
            if position not in chosen_layouts:
                raise PlanError("a cipher operand was never used", operand=position)
            plan_operands[position] = CipherInput(position, chosen_layouts[position])
    return Plan(
        spec=str(spec) if "..." not in subscripts else subscripts,
        slots=slots,
        operands=tuple(plan_operands),
        plain_program=tuple(program),
        steps=tuple(builder.steps),
        outputs=tuple(final.cts),
        output_layout=layout,
    )
