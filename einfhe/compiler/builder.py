"""The plan builder: emits plan steps and numbers values for every lowering, the einsum strategies' and the model
compiler's alike.

It knows the packing moves a lowering is made of: joint iteration-space layouts (with an operand's layout
restricted to line up with them, and the ciphertext each tile of it maps to), products with lazy rescaling,
reductions (additions across ciphertexts, rotate-and-sum within), masked-rotation relayouts, integer
combinations by additions alone, bootstraps and Chebyshev series. `checkpoint`/`rollback` let a caller try a
lowering and take it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PlanError
from ..layout import Dim, Layout, next_pow2
from ..plan import Add, AddPlain, Bootstrap, Chebyshev, Load, Mask, Mul, MulPlain, PlainTensor, Rescale, Rotate, Step, Sub
from ..plan.steps import step_level
from .relayout import relayout_moves

__all__ = ["Packed", "PlanBuilder", "CostCapExceeded", "EARLY", "LATE", "RESCALES"]


class CostCapExceeded(PlanError):
    """A candidate plan's cost floor passed the cap it was built under: a cheaper plan is already known."""


@dataclass(frozen=True)
class Packed:
    """A cipher value during lowering: its ciphertext value ids and its layout."""

    cts: tuple[int, ...]
    layout: Layout


EARLY, LATE = "early", "late"  # where a contraction's rescale goes: before its rotations (faster) or after
RESCALES = (EARLY, LATE)


class PlanBuilder:
    """Emits plan steps for contractions, reductions and relayouts, numbering values as it goes."""

    def __init__(self, slots: int, max_cts: int, floor=None, cap: float = float("inf"),
                 late_rescale: bool = False) -> None:
        self.slots = slots
        self.max_cts = max_cts
        self.late_rescale = late_rescale  # multiply_reduce rescales after its rotations, not before
        self.steps: list[Step] = []
        self._next_value = 0
        self._next_dim = 0
        self.floor = floor  # a `einfhe.compiler.pricing.FloorPrices`, or None: nothing is priced while building
        self.cap = cap
        self.spent = 0.0  # the floor price of what was emitted (and encrypted): a lower bound of its cost
        self._levels: dict[int, int] = {}
        self._depth = 0
        # the plaintexts a backend's cache would hold, at the smallest ring and chain (the most it can hold)
        self._encoded = floor.encoded_plaintexts() if floor is not None else None

    # -- emission -----------------------------------------------------------------------------------
    def _spend(self, seconds: float) -> None:
        """Add `seconds` to the cost floor; past the cap the candidate is given up (`CostCapExceeded`)."""
        self.spent += seconds
        if self.spent > self.cap:
            raise CostCapExceeded("a plan already found is cheaper than this one can be", cap_seconds=self.cap)

    def _emit(self, cls, *args) -> int:
        out = self._next_value
        self._next_value += 1
        step = cls(out, *args)
        self.steps.append(step)
        if self.floor is not None:
            level = self._levels[out] = step_level(step, self._levels)
            self._depth = max(self._depth, level)
            self._spend(self.floor.price(step.op, self._depth, level, self._encoded.reused(step, level)))
        return out

    def emit(self, cls, *args) -> int:
        """Append a step of type `cls` with these arguments after its output id; return the output id."""
        return self._emit(cls, *args)

    def sum_values(self, values: list[int]) -> int:
        """A balanced tree of additions over ciphertext values; return the sum's id."""
        return self._sum(list(values))

    def checkpoint(self) -> tuple:
        """A mark to `rollback` to (steps emitted, next value id, next dimension name, cost floor spent, depth,
        encoded plaintexts)."""
        encoded = self._encoded.copy() if self._encoded is not None else None
        return len(self.steps), self._next_value, self._next_dim, self.spent, self._depth, encoded

    def rollback(self, mark: tuple) -> None:
        """Forget every step emitted after `checkpoint` returned `mark` (to try another lowering)."""
        del self.steps[mark[0]:]
        self._next_value, self._next_dim, self.spent, self._depth, encoded = mark[1:]
        self._encoded = encoded.copy() if encoded is not None else None

    def fresh_dim_name(self) -> str:
        """A new name for a structural (rep/zero/junk) dimension."""
        self._next_dim += 1
        return f"_{self._next_dim}"

    def load(self, operand: int, layout: Layout) -> Packed:
        """Load every ciphertext of cipher operand `operand`, encrypted in `layout`."""
        self._check_size(layout)
        if self.floor is not None:
            self._spend(layout.num_cts * self.floor.encrypt)
        return Packed(tuple(self._emit(Load, operand, ct) for ct in range(layout.num_cts)), layout)

    def _sum(self, values: list[int]) -> int:
        """Balanced tree of additions."""
        while len(values) > 1:
            values = [self._emit(Add, values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                      for i in range(0, len(values), 2)]
        return values[0]

    def _check_size(self, layout: Layout) -> None:
        if layout.num_cts > self.max_cts:
            raise PlanError(
                f"this contraction needs {layout.num_cts} ciphertexts, more than the limit of {self.max_cts}: "
                "use more slots (a larger ring), split the tensor, or raise max_cts",
                layout=str(layout),
            )

    # -- joint layouts ------------------------------------------------------------------------------
    def joint_layout(self, kept: str, reduced: str, sizes: dict[str, int], base: Layout | None) -> Layout:
        """The joint iteration-space layout: contracted indices outermost, then kept ones, then `base`.

        A kept index new to `base` takes the place of part of a replicated dimension of `base` inside a
        ciphertext where it fits (the copies are equal, so any of them may stand for any index): no ciphertext
        or product is added for it."""
        present = set(base.indices) if base is not None else set()
        new_kept = [i for i in kept if i not in present and sizes[i] > 1]
        base_dims, placed = self._into_replicas(base, new_kept, sizes) if base is not None else ((), set())
        outer = [i for i in reduced if i not in present] + [i for i in new_kept if i not in placed]
        dims = tuple(Dim(i, next_pow2(sizes[i]), "axis", sizes[i]) for i in outer if sizes[i] > 1) + base_dims
        indices = "".join(i for i in kept + reduced if sizes[i] > 1 or i in present)
        shape = tuple(sizes[i] for i in indices)
        joint = Layout(dims=dims, slots=self.slots, indices=indices, shape=shape)
        self._check_size(joint)
        return joint

    def _into_replicas(self, base: Layout, indices: list[str], sizes: dict[str, int]) -> tuple[tuple[Dim, ...], set]:
        """`base`'s dimensions with each of `indices` that fits carved out of a replicated dimension lying inside
        one ciphertext (the index outermost, the rest of the copies below it); and the indices placed."""
        dims, placed = list(base.dims), set()
        for index in indices:
            size = next_pow2(sizes[index])
            for pos, dim in enumerate(dims):
                stride = int(np.prod([d.size for d in dims[pos + 1:]], dtype=np.int64))
                if dim.kind == "rep" and size <= dim.size and stride * dim.size <= self.slots:
                    rest = [Dim(self.fresh_dim_name(), dim.size // size, "rep")] if dim.size > size else []
                    dims[pos:pos + 1] = [Dim(index, size, "axis", sizes[index])] + rest
                    placed.add(index)
                    break
        return tuple(dims), placed

    def restrict(self, joint: Layout, indices: str, shape: tuple[int, ...]) -> Layout:
        """Layout of an operand with `indices`/`shape` packed to line up with `joint`.

        Joint dimensions the operand lacks become replication (or zeros, opposite junk) inside a ciphertext
        and are dropped across ciphertexts, so an operand repeated over tiles is uploaded once.
        """
        extent = dict(zip(indices, shape))
        dims = []
        for dim, stride in zip(joint.dims, (joint.stride(d.name) for d in joint.dims)):
            if dim.kind == "axis" and extent.get(dim.name) == dim.extent:
                dims.append(dim)
                continue
            inslot = dim.size if stride * dim.size <= self.slots else max(1, self.slots // stride)
            if inslot > 1:
                kind = "zero" if dim.kind in ("junk", "zero") else "rep"
                dims.append(Dim(dim.name if dim.kind != "axis" else self.fresh_dim_name(), inslot, kind))
        return Layout(dims=tuple(dims), slots=self.slots, indices=indices, shape=shape)

    def ct_map(self, joint: Layout, layout: Layout) -> list[int]:
        """For each ciphertext of `joint`, the ciphertext of `layout` (a restriction of it) that lines up."""
        if layout.num_cts == 1:
            return [0] * joint.num_cts
        names = {d.name: (d.size, layout.stride(d.name)) for d in layout.dims}
        sizes = [d.size for d in joint.dims]
        out = []
        for ct in range(joint.num_cts):
            idx = np.unravel_index(ct * self.slots, sizes)
            flat = sum((int(i) % names[d.name][0]) * names[d.name][1]
                       for d, i in zip(joint.dims, idx) if d.name in names)
            out.append(flat // self.slots)
        return out

    def plain_refs(self, name: str, indices: str, shape: tuple[int, ...], joint: Layout) -> list[PlainTensor]:
        """References to plain value `name` packed to line up with each ciphertext of `joint`."""
        layout = self.restrict(joint, indices, shape)
        return [PlainTensor(name, layout, c) for c in self.ct_map(joint, layout)]

    def add_plain(self, value: Packed, name: str) -> Packed:
        """Add plain value `name` (a tensor with the value's indices) slot-wise, e.g. a bias."""
        refs = self.plain_refs(name, value.layout.indices, value.layout.shape, value.layout)
        return Packed(tuple(self._emit(AddPlain, ct, ref) for ct, ref in zip(value.cts, refs)), value.layout)

    def chebyshev(self, value: Packed, series: list[tuple[tuple, float, float]]) -> Packed:
        """Evaluate a Chebyshev series on each ciphertext; `series[i]` is (coeffs, lo, hi) for ciphertext i."""
        return Packed(tuple(self._emit(Chebyshev, ct, *series[i]) for i, ct in enumerate(value.cts)), value.layout)

    def bootstrap(self, value: Packed) -> Packed:
        """Refresh every ciphertext of a value to a full level budget."""
        return Packed(tuple(self._emit(Bootstrap, ct) for ct in value.cts), value.layout)

    def square(self, value: Packed) -> Packed:
        """Slot-wise square of every ciphertext, rescaled (one level)."""
        return Packed(tuple(self._emit(Rescale, self._emit(Mul, ct, ct)) for ct in value.cts), value.layout)

    def weighted_sum(self, cts: list[int], plains: list[PlainTensor], zero_like: int) -> int:
        """sum(ct * plain) with a single rescale; an empty sum is a zero ciphertext made from `zero_like`."""
        if not cts:
            return self._emit(Sub, zero_like, zero_like)
        return self._emit(Rescale, self._sum([self._emit(MulPlain, ct, p) for ct, p in zip(cts, plains)]))

    def int_combination(self, cts: list[int], weights) -> int:
        """sum(w * ct) for small integer weights by additions and doublings only: no level is spent.

        Ciphertexts sharing a weight are summed first; the positive and negative parts are then built bit by
        bit (Horner in base 2) and subtracted.
        """
        by_value: dict[int, list[int]] = {}
        for ct, w in zip(cts, weights):
            if int(w):
                by_value.setdefault(int(w), []).append(ct)
        sums = {w: self._sum(group) for w, group in by_value.items()}

        def part(sign: int) -> int | None:
            values = {abs(w): ct for w, ct in sums.items() if (w > 0) == (sign > 0)}
            if not values:
                return None
            acc = None
            for bit in reversed(range(max(values).bit_length())):
                if acc is not None:
                    acc = self._emit(Add, acc, acc)
                terms = [ct for v, ct in values.items() if v >> bit & 1]
                if terms:
                    total = self._sum(terms)
                    acc = total if acc is None else self._emit(Add, acc, total)
            return acc

        positive, negative = part(+1), part(-1)
        if positive is None and negative is None:
            return self._emit(Sub, cts[0], cts[0])
        if negative is None:
            return positive
        if positive is None:
            return self._emit(Sub, self._emit(Sub, negative, negative), negative)
        return self._emit(Sub, positive, negative)

    def scale(self, value: Packed, name: str) -> Packed:
        """Multiply slot-wise by plain value `name` (laid out like the value) and rescale: one level."""
        refs = self.plain_refs(name, value.layout.indices, value.layout.shape, value.layout)
        return Packed(tuple(self._emit(Rescale, self._emit(MulPlain, ct, ref)) for ct, ref in zip(value.cts, refs)),
                      value.layout)

    def add_values(self, a: Packed, b: Packed) -> Packed:
        """Slot-wise sum of two values in the same layout."""
        return Packed(tuple(self._emit(Add, x, y) for x, y in zip(a.cts, b.cts)), a.layout)

    def align(self, value: Packed, joint: Layout) -> list[int]:
        """Ciphertext ids of a fixed value for each ciphertext of a joint layout built on it."""
        n = value.layout.num_cts
        return [value.cts[ct % n] for ct in range(joint.num_cts)]

    # -- arithmetic ---------------------------------------------------------------------------------
    def multiply(self, left: list[int], right: list[int] | list[PlainTensor]) -> list[int]:
        """Slot-wise products ct-by-ct (cipher or plain right side), each rescaled."""
        out = []
        for a, b in zip(left, right):
            prod = self._emit(MulPlain, a, b) if isinstance(b, PlainTensor) else self._emit(Mul, a, b)
            out.append(self._emit(Rescale, prod))
        return out

    def multiply_reduce(self, left: list[int], right: list, joint: Layout, reduced: str) -> Packed:
        """Products summed over `reduced`: dimensions that lie wholly across ciphertexts are summed by
        additions before a single rescale per output ciphertext (lazy rescaling); the rest by `reduce`. With
        `late_rescale` the rotations of `reduce` run before that rescale too, at the product's scale, so their
        key-switching noise is divided by the rescale (on one more tower: slower, more precise)."""
        across = [n for n in reduced if n in {d.name for d in joint.dims} and joint.stride(n) >= self.slots]
        if self.late_rescale:
            products = [self._emit(MulPlain, a, b) if isinstance(b, PlainTensor) else self._emit(Mul, a, b)
                        for a, b in zip(left, right)]
            summed = self.reduce(Packed(tuple(products), joint), reduced)
            return Packed(tuple(self._emit(Rescale, ct) for ct in summed.cts), summed.layout)
        if not across:
            return self.reduce(Packed(tuple(self.multiply(left, right)), joint), reduced)
        dims = tuple(d for d in joint.dims if d.name not in across)
        keep = [(i, n) for i, n in zip(joint.indices, joint.shape) if i not in across]
        target = Layout(dims, self.slots, "".join(i for i, _ in keep), tuple(n for _, n in keep))
        strides = {d.name: target.stride(d.name) for d in dims}
        sizes = [d.size for d in joint.dims]
        groups: dict[int, list[int]] = {}
        for ct, (a, b) in enumerate(zip(left, right)):
            idx = np.unravel_index(ct * self.slots, sizes)
            flat = sum(int(i) * strides[d.name] for d, i in zip(joint.dims, idx) if d.name in strides)
            groups.setdefault(flat // self.slots, []).append(ct)
        out = []
        for key in sorted(groups):
            terms = [self._emit(MulPlain, left[c], right[c]) if isinstance(right[c], PlainTensor)
                     else self._emit(Mul, left[c], right[c]) for c in groups[key]]
            out.append(self._emit(Rescale, self._sum(terms)))
        rest = "".join(n for n in reduced if n not in across)
        return self.reduce(Packed(tuple(out), target), rest)

    def reduce(self, value: Packed, names: str) -> Packed:
        """Sum out the dimensions `names` (outermost first): additions across ciphertexts, rotations within."""
        order = sorted(names, key=value.layout.position)
        for name in order:
            value = self._reduce_one(value, name)
        return value

    def _reduce_one(self, value: Packed, name: str) -> Packed:
        layout, slots = value.layout, self.slots
        pos, dim, stride = layout.position(name), layout.dim(name), layout.stride(name)
        inslot = dim.size if stride * dim.size <= slots else max(1, slots // stride)
        across = dim.size // inslot
        cts = list(value.cts)
        if across > 1:
            ct_stride = inslot * stride // slots
            grouped = []
            for ct in range(len(cts)):
                if (ct // ct_stride) % across == 0:
                    grouped.append(self._sum([cts[ct + k * ct_stride] for k in range(across)]))
            cts = grouped
        step = stride
        while step < stride * inslot:
            cts = [self._emit(Add, ct, self._emit(Rotate, ct, step)) for ct in cts]
            step *= 2
        dims = list(layout.dims)
        if inslot == 1:
            del dims[pos]
        else:
            above = [d for d, s in zip(dims[:pos], (layout.stride(d.name) for d in dims[:pos])) if s < slots]
            kind = "rep" if all(d.kind == "rep" for d in above) else "junk"
            dims[pos] = Dim(self.fresh_dim_name(), inslot, kind)
        keep = [(i, n) for i, n in zip(layout.indices, layout.shape) if i != name]
        new = Layout(tuple(dims), slots, "".join(i for i, _ in keep), tuple(n for _, n in keep))
        return Packed(tuple(cts), new)

    # -- relayout -----------------------------------------------------------------------------------
    def relayout(self, value: Packed, target: Layout) -> Packed:
        """Move a value into `target` by masked rotations: one rotation per distinct slot offset, one level."""
        src = value.layout
        if target.shape != src.shape or target.indices != src.indices:
            raise PlanError("relayout between different tensors", source=str(src), target=str(target))
        if not target.clean:
            raise PlanError("a relayout target cannot hold junk", target=str(target))
        self._check_size(target)
        slots = self.slots
        rotated: dict[tuple[int, int], int] = {}
        out = []
        for moves in relayout_moves(src, target):
            terms = []
            for move in moves:
                key = (move.src_ct, move.offset)
                if key not in rotated:
                    ct = value.cts[move.src_ct]
                    rotated[key] = ct if move.offset == 0 else self._emit(Rotate, ct, move.offset)
                terms.append(self._emit(MulPlain, rotated[key], Mask(move.ranges, slots)))
            if not terms:
                terms.append(self._emit(MulPlain, value.cts[0], Mask((), slots)))
            out.append(self._emit(Rescale, self._sum(terms)))
        return Packed(tuple(out), target)
