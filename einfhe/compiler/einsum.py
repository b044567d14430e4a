"""Compile an einsum over cipher and plain operands into a `Plan`.

Pipeline: `parse_einsum` validates the spec; each operand is normalized (a repeated index in a cipher
operand becomes a fresh index times a plain identity, one in a plain operand is taken as a diagonal in numpy;
size-1 axes broadcast by replication); opt_einsum orders the pairwise contractions; each contraction is
lowered by `PlanBuilder` (plain-only ones run in numpy on the server as a plain program).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import opt_einsum

from ..errors import EinsumError, PlanError
from ..layout import Dim, Layout, natural_layout
from ..plan import CipherInput, PlainExpr, PlainInput, Plan
from ..plan.budget import DEFAULT_KEY_BUDGET, DEFAULT_UPLOAD_BUDGET, Budget
from ..plan.cost import load_cost_model
from ..plan.keybasis import BASES
from ..spec import check_subscripts, parse_einsum, refuse_complex
from .bounds import SAFE_BOUND, einsum_bound
from .axis_split import compile_tiled
from .builder import LATE, RESCALES, CostCapExceeded, Packed, PlanBuilder
from .pricing import FloorPrices, MemoizedCostModel
from .search import AUTO_BASIS, choose_plan
from .rings import AUTO_SLOTS, CANDIDATE_SLOTS, choose_ring
from .strategies import AUTO, STRATEGIES, Contraction, FreeCipher, Lowerer, PlainValue, Value, get_strategy

__all__ = ["Cipher", "cipher", "compile_einsum", "DEFAULT_SLOTS", "DEFAULT_MAX_CTS"]

DEFAULT_SLOTS = 8192
DEFAULT_MAX_CTS = 1024
PLAIN_FIRST = "plain-first"
SEQUENTIAL = "sequential"


@dataclass(frozen=True)
class Cipher:
    """Placeholder for an encrypted operand: its shape, its layout when it is already encrypted, and the largest
    |entry| the client will encrypt in it, where declared."""

    shape: tuple[int, ...]
    layout: Layout | None = None
    bound: float | None = None


def cipher(shape, layout: Layout | None = None, bound: float | None = None) -> Cipher:
    """Describe a cipher operand of `shape` (the plan picks its layout unless `layout` fixes it); `bound`, the largest
    |entry| it will hold, lets the default ring choice consider the small ring (einfhe.compiler.bounds)."""
    if bound is not None and not (np.isfinite(bound) and bound > 0):
        raise EinsumError(f"a cipher operand's bound must be a positive finite number, got {bound!r}")
    return Cipher(tuple(int(n) for n in shape), layout, None if bound is None else float(bound))


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
    slots: int | str | None = None,
    max_cts: int = DEFAULT_MAX_CTS,
    optimize: str = "auto",
    strategy: str = AUTO,
    rotation_basis: str = AUTO_BASIS,
    cost_model=None,
    key_budget: int = DEFAULT_KEY_BUDGET,
    upload_budget: int = DEFAULT_UPLOAD_BUDGET,
    rescale: str = "early",
) -> Plan:
    """Compile `subscripts` over operands (numpy arrays are plain; `cipher(...)`/encrypted tensors are cipher).

    `strategy` names how cipher contractions are lowered (`auto`: each by the cheapest strategy that fits,
    by the calibrated cost model; a named one where it fits, iteration space elsewhere). `rotation_basis`
    `bsgs` rewrites every rotation into a giant and a baby step, `pow2`, `pow4`, `pow16` into powers of 2, 4 or
    16 (fewer distinct keys, more key switches), `plan` keeps one key per offset, `auto` keeps them unless they pass `key_budget`. The plan's
    evaluation keys must fit in `key_budget` bytes and its uploaded ciphertexts in `upload_budget` bytes
    (`einfhe.plan.budget`): candidates (opt_einsum's path; with `optimize="auto"` also the plain operands
    contracted first, and the operands taken in order, each joining the running result; cipher operands in
    natural layouts where client-packed ones upload too much) are compared by estimated seconds, server steps
    plus client encryption, and the cheapest that fits is kept (`plan.explain()` shows it beside the cheapest
    unconstrained one); `cost_model` replaces the calibrated `einfhe.plan.cost.CostModel`.
    `slots="auto"` compiles for each candidate slot count and keeps the plan whose 128-bit ring is cheapest
    (`einfhe.compiler.rings`); the default (None) is "auto" where every cipher operand declares a bound
    (`cipher(shape, bound=...)`) and the results' bound is at most `einfhe.compiler.bounds.SAFE_BOUND`, else
    8,192 slots. `rescale="late"` sums a product's rotations before its rescale instead of after
    (iteration-space contractions): their key-switching noise is divided by the rescale, at the price of
    rotating on one more tower (a 64x64 matvec at N=2^13: about 10x less error, 1.8x the time).
    Where no plan fits (`max_cts` or a budget), a free axis of a cipher operand is split into tiles
    (`einfhe.compiler.axis_split`): the plan's spec names the tiled einsum, and its input and output layouts are
    seen as the shapes given here (`Layout.view`), so encrypt, run and decrypt take and return those.
    """
    if rescale not in RESCALES:
        raise EinsumError(f"unknown rescale placement {rescale!r}; valid placements: {', '.join(RESCALES)}",
                          spec=subscripts)
    subscripts = check_subscripts(subscripts)
    if slots is None:
        slots = _default_slots(subscripts, operands)
    if slots == AUTO_SLOTS:
        fixed = {k.layout.slots for k in map(_operand_kind, operands) if k is not None and k.layout is not None}
        candidates = tuple(fixed) if fixed else CANDIDATE_SLOTS
        return choose_ring(lambda n: compile_einsum(subscripts, *operands, slots=n, max_cts=max_cts, optimize=optimize,
                                                    strategy=strategy, rotation_basis=rotation_basis,
                                                    cost_model=cost_model, key_budget=key_budget,
                                                    upload_budget=upload_budget, rescale=rescale),
                           candidates, cost_model)
    if strategy != AUTO:
        get_strategy(strategy)
    options = dict(slots=slots, max_cts=max_cts, optimize=optimize, strategy=strategy, rotation_basis=rotation_basis,
                   cost_model=cost_model, key_budget=key_budget, upload_budget=upload_budget, rescale=rescale)
    try:
        return _compile_fitting(subscripts, operands, **options)
    except PlanError as refusal:
        splittable = [q for q, op in enumerate(operands) if isinstance(op, Cipher) and op.layout is None]
        if not splittable:
            raise
        spec = parse_einsum(subscripts, *(op.shape if isinstance(op, Cipher) else np.shape(op) for op in operands))
        return compile_tiled(spec, list(operands), splittable, slots,
                             lambda tiled, *ops: _compile_fitting(tiled, ops, **options), refusal)


def _compile_fitting(subscripts: str, operands, *, slots: int, max_cts: int, optimize: str, strategy: str,
                     rotation_basis: str, cost_model, key_budget: int, upload_budget: int, rescale: str) -> Plan:
    """`compile_einsum` at a fixed slot count with the operands' shapes as given (no axis split into tiles)."""
    if optimize == PLAIN_FIRST and sum(_operand_kind(op) is None for op in operands) < 2:
        raise EinsumError(
            f"optimize={PLAIN_FIRST!r} contracts the plain operands first and needs two or more of them: "
            "use optimize='auto' (which tries that path where it applies)",
            spec=subscripts,
        )
    if rotation_basis not in (AUTO_BASIS, *BASES):
        raise PlanError(f"unknown rotation basis {rotation_basis!r}; valid bases: {', '.join((AUTO_BASIS, *BASES))}")
    budget = Budget(int(key_budget), int(upload_budget))
    cost_model = MemoizedCostModel(cost_model or load_cost_model())
    floor = FloorPrices(slots, cost_model) if isinstance(slots, int) and slots >= 1 and not slots & (slots - 1) else None
    kinds = [_operand_kind(op) for op in operands]

    def build(path, natural: bool, cap: float) -> Plan | None:
        ops = [_natural(op, kind, slots) if natural else op for op, kind in zip(operands, kinds)]
        return _compile(subscripts, ops, slots, max_cts, strategy, cost_model, path, floor, cap, rescale == LATE)

    paths = [optimize] + ([PLAIN_FIRST, SEQUENTIAL] if optimize == "auto" else [])
    natural_too = any(k is not None and k.layout is None for k in kinds)
    return choose_plan(build, paths, budget, rotation_basis, cost_model, subscripts, natural_too)


def _default_slots(subscripts: str, operands) -> int | str:
    """"auto" where the cipher operands' declared bounds bound the results within the small ring's safe range,
    else DEFAULT_SLOTS."""
    kinds = [_operand_kind(op) for op in operands]
    try:
        spec = parse_einsum(subscripts, *[k.shape if k is not None else np.shape(op) for k, op in zip(kinds, operands)])
    except EinsumError:
        return DEFAULT_SLOTS  # the compilation says what is wrong
    bound = einsum_bound(subscripts, [op if k is None else k for k, op in zip(kinds, operands)], spec.sizes)
    return AUTO_SLOTS if bound is not None and bound <= SAFE_BOUND else DEFAULT_SLOTS


def _natural(operand, kind: Cipher | None, slots: int):
    """A free cipher operand fixed to its natural (row-major) layout; other operands unchanged."""
    if kind is None or kind.layout is not None:
        return operand
    return Cipher(kind.shape, natural_layout(kind.shape, slots), kind.bound)


def _plain_first_path(values: list) -> list[tuple[int, ...]] | None:
    """An opt_einsum path contracting every plain value first, then the rest in order (None if < 2 plain)."""
    plain = tuple(k for k, v in enumerate(values) if isinstance(v, PlainValue))
    if len(plain) < 2:
        return None
    return [plain] + [(0, 1)] * (len(values) - len(plain))


def _sequential_path(values: list) -> list[tuple[int, ...]] | None:
    """An opt_einsum path taking the operands in order, each joining the running result (None if < 3 values):
    a fresh cipher operand is packed by the client to line up with the result, so a chain needs no relayout."""
    if len(values) < 3:
        return None
    return [(0, 1)] + [(0, left - 1) for left in range(len(values) - 1, 1, -1)]


def _compile(subscripts, operands, slots, max_cts, strategy, cost_model, optimize, floor=None,
             cap: float = float("inf"), late_rescale: bool = False) -> Plan | None:
    """Compile along the path `optimize` (an opt_einsum optimizer, PLAIN_FIRST or SEQUENTIAL); None if that path
    is moot.
    With `floor` prices, building stops with `CostCapExceeded` once the emitted steps' floor passes `cap`."""
    if not isinstance(slots, int) or slots < 1 or slots & (slots - 1):
        raise EinsumError(f"slots must be a power of two or {AUTO_SLOTS!r}", slots=slots)
    kinds = [_operand_kind(op) for op in operands]
    shapes = [k.shape if k is not None else np.shape(op) for k, op in zip(kinds, operands)]
    spec = parse_einsum(subscripts, *shapes)
    for position, (kind, op) in enumerate(zip(kinds, operands)):
        if kind is None:
            refuse_complex(op, spec=subscripts, operand=position)
    if spec.empty:
        raise EinsumError(
            f"an index has size 0, so the result is numpy's {'empty array' if 0 in spec.output_shape else 'zeros'} "
            f"of shape {spec.output_shape} whatever the operands hold: nothing is encrypted in it and no plan is "
            "made; einfhe.einsum returns it (or use numpy.einsum)",
            spec=subscripts,
        )
    if all(k is None for k in kinds):
        raise EinsumError("no operand is encrypted: use numpy.einsum for plain tensors", spec=subscripts)
    for k in kinds:
        if k is not None and k.layout is not None and k.layout.slots != slots:
            raise EinsumError(
                f"an encrypted operand has {k.layout.slots} slots but the plan uses {slots}", spec=subscripts
            )
    sizes = spec.sizes
    spare = iter(c for c in string.ascii_letters if c not in sizes)
    builder = PlanBuilder(slots, max_cts, floor, cap, late_rescale)
    lw = Lowerer(builder)
    program = lw.program
    plan_operands: list[CipherInput | PlainInput] = []
    values: list[Value] = []
    fixed_loads: list[tuple[int, Layout]] = []

    for position, (raw, shape, kind) in enumerate(zip(spec.inputs, spec.shapes, kinds)):
        if kind is None:
            plan_operands.append(PlainInput(position, shape))
            effective = "".join(dict.fromkeys(i for i, n in zip(raw, shape) if n == sizes[i]))
            name = f"op{position}"
            if effective != raw:
                program.append(PlainExpr(f"p{position}", f"{raw}->{effective}", (name,)))
                name = f"p{position}"
            values.append(PlainValue(name, effective, tuple(sizes[i] for i in effective)))
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
                values.append(PlainValue(delta, index + fresh, (sizes[index], sizes[index])))
                index = fresh
            seen.add(index)
            renamed.append(index)
        renamed = "".join(renamed)
        if kind.layout is None:
            plan_operands.append(CipherInput(position, None))  # layout filled in when first used
            values.append(FreeCipher(position, renamed, shape))
        else:
            relabeled = _relabel(kind.layout, renamed, sizes)
            plan_operands.append(CipherInput(position, kind.layout))
            fixed_loads.append((position, relabeled))
            values.append(builder.load(position, relabeled))

    def effective_indices(value: Value) -> str:
        if isinstance(value, Packed):
            return value.layout.indices
        return value.indices if isinstance(value, PlainValue) else "".join(
            i for i, n in zip(value.indices, value.shape) if n == sizes[i] or sizes[i] == 1
        )

    if optimize in (PLAIN_FIRST, SEQUENTIAL):
        optimize = (_plain_first_path if optimize == PLAIN_FIRST else _sequential_path)(values)
        if optimize is None:
            return None
    terms = [effective_indices(v) for v in values]
    eq = ",".join(terms) + "->" + spec.output
    try:
        _, info = opt_einsum.contract_path(
            eq, *[tuple(sizes[i] for i in t) for t in terms], shapes=True, optimize=optimize
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise EinsumError(f"opt_einsum could not order this contraction: {exc}", spec=subscripts) from exc

    used: list[str] = []
    for position, (contract_inds, _, step_str, _, _) in enumerate(info.contraction_list):
        args = [values.pop(i) for i in contract_inds]
        lhs, out = step_str.split("->")
        step_terms = lhs.split(",")
        reduced = "".join(dict.fromkeys(i for t in step_terms for i in t if i not in out))
        if all(isinstance(a, PlainValue) for a in args):
            name = f"t{len(program)}"
            program.append(PlainExpr(name, step_str, tuple(a.name for a in args)))
            values.append(PlainValue(name, out, tuple(sizes[i] for i in out)))
            continue
        if len(args) > 2:
            raise PlanError("contractions are lowered pairwise", step=step_str)
        final = position == len(info.contraction_list) - 1
        contraction = Contraction(tuple(args), out, reduced, tuple(sizes.items()), final)
        result = _lower(lw, contraction, strategy, used, cost_model)
        values.append(Packed(result.cts, _with_indices(result.layout, out, sizes)))

    (final,) = values
    if isinstance(final, FreeCipher):
        joint = builder.joint_layout(spec.output, "", sizes, None)
        final = lw.load_free(final, builder.restrict(joint, final.indices, final.shape))
    layout = _with_indices(final.layout, spec.output, sizes)
    for position, layout_in in enumerate(plan_operands):
        if isinstance(layout_in, CipherInput) and layout_in.layout is None:
            if position not in lw.chosen:
                raise PlanError("a cipher operand was never used", operand=position)
            plan_operands[position] = CipherInput(position, lw.chosen[position])
    return Plan(
        spec=str(spec) if "..." not in subscripts else subscripts,
        slots=slots,
        operands=tuple(plan_operands),
        plain_program=tuple(program),
        steps=tuple(builder.steps),
        outputs=tuple(final.cts),
        output_layout=layout,
        strategy="+".join(sorted(set(used))) or "iteration-space",
    )


def _lower(lw: Lowerer, contraction: Contraction, strategy: str, used: list[str], model) -> Packed:
    """Lower one contraction by `strategy`, or under `auto` by the cheapest strategy that fits it.

    Under `auto` the general iteration-space strategy is tried last, so that when no other fits, its trial is
    kept rather than built twice; a trial that passes the builder's cost cap, or that needs more ciphertexts than
    `max_cts` (a `PlanError`), counts as not fitting; that error is raised when no strategy fits."""
    from ..plan.cost import lowering_seconds

    if strategy == AUTO:
        names = sorted(STRATEGIES, key=lambda name: name == "iteration-space")
    else:
        names = list(dict.fromkeys([strategy, "iteration-space"]))
    fits, too_large = [], None
    for position, name in enumerate(names):
        mark = lw.checkpoint()
        try:
            result = get_strategy(name)(lw, contraction)
        except CostCapExceeded:
            result = None
        except PlanError as exc:  # e.g. the iteration space of a large product passes max_cts
            result, too_large = None, exc
        if result is not None:
            fits.append((lowering_seconds(lw, mark, model), list(STRATEGIES).index(name), name))  # ties: registry order
            if position == len(names) - 1 and min(fits)[2] == name:
                used.append(name)
                return result
        lw.rollback(mark)
        if strategy != AUTO and fits:
            break
    if not fits:
        if too_large is not None:
            raise too_large
        raise CostCapExceeded("every strategy for this contraction passed the cost cap", cap_seconds=lw.builder.cap)
    name = min(fits)[2]
    used.append(name)
    return get_strategy(name)(lw, contraction)
