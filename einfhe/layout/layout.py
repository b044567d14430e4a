"""Layouts: where each element of a logical tensor lives among the slots of one or more ciphertexts.

A layout is an ordered list of dimensions, outermost first, each padded to a power of two. Slot positions
are row-major over the padded sizes: position = sum(index[d] * stride[d]). When the block is smaller than
the slot count it repeats to fill every slot (so rotations wrap within the block); when it is larger it is
cut into `block // slots` ciphertexts, the outer dimensions choosing the ciphertext.

Dimension kinds:
- ``axis``: a tensor axis; indices past the tensor's extent hold zeros (padding).
- ``rep``: the tensor is replicated along it (broadcast copies, or what a clean rotate-and-sum leaves).
- ``zero``: only index 0 holds the tensor; the other positions hold zeros.
- ``junk``: only index 0 holds the tensor; the other positions hold partial sums (after an inner
  rotate-and-sum). A product with a ``zero`` dimension of the other operand cleans it.

Layouts are frozen values: printable, comparable, serializable to JSON, and they pack and unpack numpy
arrays (the client packs in whatever layout a plan asks for, which makes replication and axis order free).

A layout may carry a `view`: the shape the user sees when the compiler split an axis into tiles (a row-major
reshape of `shape`: a (256, 32, 8) layout seen as (256, 256)); `pack` takes and `unpack` returns that shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import LayoutError

__all__ = ["DIM_KINDS", "Dim", "Layout", "next_pow2", "natural_layout"]

DIM_KINDS = ("axis", "rep", "zero", "junk")


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (and >= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class Dim:
    """One dimension of a layout: a name, a padded power-of-two size, a kind and (for axes) the extent."""

    name: str
    size: int
    kind: str = "axis"
    extent: int = 0

    def __post_init__(self) -> None:
        if self.kind not in DIM_KINDS:
            raise LayoutError(f"unknown dimension kind {self.kind!r}; valid kinds: {', '.join(DIM_KINDS)}")
        if self.size < 1 or self.size & (self.size - 1):
            raise LayoutError("a dimension's size must be a power of two", dim=self.name, size=self.size)
        if self.kind == "axis":
            if not 1 <= self.extent <= self.size:
                raise LayoutError("an axis extent must lie in 1..size", dim=self.name, extent=self.extent)
        elif self.extent not in (0, self.size):
            raise LayoutError("only axes have an extent", dim=self.name)

    @property
    def valid(self) -> bool:
        """True when every index of this dimension holds meaningful data (axis or rep)."""
        return self.kind in ("axis", "rep")

    def __str__(self) -> str:
        if self.kind == "axis":
            pad = f"/{self.size}" if self.extent != self.size else ""
            return f"{self.name}:{self.extent}{pad}"
        return f"{self.kind}({self.name}:{self.size})"


@dataclass(frozen=True)
class Layout:
    """How a tensor with indices `indices` and shape `shape` is spread over ciphertexts of `slots` slots."""

    dims: tuple[Dim, ...]
    slots: int
    indices: str
    shape: tuple[int, ...]
    view: tuple[int, ...] | None = None
    _strides: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.slots < 1 or self.slots & (self.slots - 1):
            raise LayoutError("the slot count must be a power of two", slots=self.slots)
        if len(self.indices) != len(self.shape):
            raise LayoutError("indices and shape disagree", indices=self.indices, shape=self.shape)
        names = [d.name for d in self.dims]
        if len(set(names)) != len(names):
            raise LayoutError("dimension names must be unique", dims=names)
        axis_dims = {d.name: d for d in self.dims if d.kind == "axis"}
        for index, n in zip(self.indices, self.shape):
            dim = axis_dims.get(index)
            if dim is None:
                if n != 1:
                    raise LayoutError(f"axis {index!r} of size {n} has no dimension", layout=str(self))
            elif dim.extent != n:
                raise LayoutError(
                    f"axis {index!r} has size {n} but its dimension holds {dim.extent}", layout=str(self)
                )
        if set(axis_dims) - set(self.indices):
            raise LayoutError("an axis dimension names no tensor axis", layout=str(self))
        elements = int(np.prod(self.shape, dtype=np.int64))
        if self.view is not None and (len(self.view) > 32 or any(n < 0 for n in self.view)
                                      or int(np.prod(self.view, dtype=np.int64)) != elements):
            raise LayoutError("a layout's view must reshape its shape (same number of elements)",
                              shape=self.shape, view=self.view)
        strides, stride = [], 1
        for dim in reversed(self.dims):
            strides.append(stride)
            stride *= dim.size
        object.__setattr__(self, "_strides", tuple(reversed(strides)))

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """The shape of the tensor the user packs and gets back: the view where there is one, else `shape`."""
        return self.shape if self.view is None else self.view

    @property
    def block(self) -> int:
        """Slots one copy of the tensor occupies (product of padded sizes)."""
        return int(np.prod([d.size for d in self.dims], dtype=np.int64)) if self.dims else 1

    @property
    def num_cts(self) -> int:
        """Number of ciphertexts the layout spans."""
        return max(1, self.block // self.slots)

    @property
    def period(self) -> int:
        """Slots after which a ciphertext repeats itself (the block, or the slot count)."""
        return min(self.block, self.slots)

    def stride(self, name: str) -> int:
        """Slot distance between consecutive indices of dimension `name`."""
        return self._strides[self.position(name)]

    def position(self, name: str) -> int:
        """Position of dimension `name`, outermost first."""
        for i, dim in enumerate(self.dims):
            if dim.name == name:
                return i
        raise LayoutError(f"no dimension {name!r}", layout=str(self))

    def dim(self, name: str) -> Dim:
        """The dimension called `name`."""
        return self.dims[self.position(name)]

    @property
    def clean(self) -> bool:
        """True when no dimension holds junk."""
        return all(d.kind != "junk" for d in self.dims)

    def __str__(self) -> str:
        body = " | ".join(str(d) for d in self.dims) or "scalar"
        cts = f" x {self.num_cts} cts" if self.num_cts > 1 else ""
        seen = f", seen as {self.view}" if self.view is not None else ""
        return f"[{body}] in {self.slots} slots{cts}{seen}"

    def describe(self) -> str:
        """A multi-line text description: dimensions, strides, blocks and ciphertext count."""
        seen = f", seen as {self.view}" if self.view is not None else ""
        lines = [f"layout of {self.indices or 'scalar'} {self.shape}{seen}: {self.num_cts} ciphertext(s) of "
                 f"{self.slots} slots"]
        for dim, stride in zip(self.dims, self._strides):
            where = ("ciphertexts" if stride >= self.slots
                     else "slots and ciphertexts" if stride * dim.size > self.slots else "slots")
            lines.append(f"  {str(dim):<18} stride {stride:<8} ({where})")
        if self.block < self.slots:
            lines.append(f"  block of {self.block} slots repeated {self.slots // self.block}x")
        return "\n".join(lines)

    # -- packing ----------------------------------------------------------------------------------
    def _block_array(self, tensor: np.ndarray) -> np.ndarray:
        """The tensor laid out as an array of shape (d.size for d in dims)."""
        if not self.dims:
            return tensor.reshape(())
        index_of = {index: axis for axis, index in enumerate(self.indices)}
        keep = [index_of[d.name] for d in self.dims if d.kind == "axis"]
        squeeze = tuple(axis for axis in range(tensor.ndim) if axis not in keep)
        core = tensor.reshape([n for axis, n in enumerate(tensor.shape) if axis not in squeeze]) if squeeze else tensor
        kept_order = sorted(keep)
        core = np.transpose(core, [kept_order.index(axis) for axis in keep]) if keep else core
        out = core
        pads, expand = [], []
        for dim in self.dims:
            if dim.kind == "axis":
                pads.append((0, dim.size - dim.extent))
            else:
                expand.append(len(pads))
                pads.append((0, 0) if dim.kind == "rep" else (0, dim.size - 1))
        for position in expand:
            out = np.expand_dims(out, position)
        out = np.pad(out, pads)
        return np.broadcast_to(out, [d.size for d in self.dims])

    def pack(self, tensor: np.ndarray) -> np.ndarray:
        """Pack a numpy tensor into an array of shape (num_cts, slots) of slot values."""
        tensor = np.asarray(tensor, dtype=np.float64)
        if tensor.shape != self.tensor_shape:
            raise LayoutError(
                f"tensor of shape {tensor.shape} does not match the layout's shape {self.tensor_shape}",
                layout=str(self),
            )
        tensor = tensor.reshape(self.shape)
        flat = np.ascontiguousarray(self._block_array(tensor)).reshape(-1)
        if flat.size < self.slots:
            flat = np.tile(flat, self.slots // flat.size)
        return flat.reshape(self.num_cts, self.slots)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Read the tensor back from an array of shape (num_cts, slots) (index 0 of rep/zero/junk dims)."""
        packed = np.asarray(packed)
        if packed.shape != (self.num_cts, self.slots):
            raise LayoutError(
                f"expected {self.num_cts} ciphertext(s) of {self.slots} slots, got {packed.shape}",
                layout=str(self),
            )
        flat = packed.reshape(-1)[: self.block]
        block = flat.reshape([d.size for d in self.dims]) if self.dims else flat.reshape(())
        picks = tuple(slice(0, d.extent) if d.kind == "axis" else 0 for d in self.dims)
        core = block[picks]
        axis_names = [d.name for d in self.dims if d.kind == "axis"]
        present = [index for index in self.indices if index in axis_names]
        core = np.transpose(core, [axis_names.index(index) for index in present]) if present else core
        return np.array(core.reshape(self.tensor_shape), dtype=packed.dtype)

    def position_array(self) -> np.ndarray:
        """An integer array of the tensor's shape: the flat slot position of one copy of each element."""
        block = np.arange(self.block).reshape([d.size for d in self.dims]) if self.dims else np.arange(1).reshape(())
        picks = tuple(slice(0, d.extent) if d.kind == "axis" else 0 for d in self.dims)
        core = block[picks]
        axis_names = [d.name for d in self.dims if d.kind == "axis"]
        present = [index for index in self.indices if index in axis_names]
        core = np.transpose(core, [axis_names.index(index) for index in present]) if present else core
        return core.reshape(self.shape)

    def positions(self) -> dict[tuple[int, ...], int]:
        """Map each valid element (tensor index tuple) to one flat slot position holding it."""
        core = self.position_array()
        return {idx: int(core[idx]) for idx in np.ndindex(*self.shape)}

    # -- JSON -------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """A JSON-ready dict of this layout."""
        data = {
            "slots": self.slots,
            "indices": self.indices,
            "shape": list(self.shape),
            "dims": [{"name": d.name, "size": d.size, "kind": d.kind, "extent": d.extent} for d in self.dims],
        }
        if self.view is not None:
            data["view"] = list(self.view)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Layout":
        """Rebuild a layout from `to_json`'s dict, validating it."""
        try:
            return cls(
                dims=tuple(Dim(str(d["name"]), int(d["size"]), str(d["kind"]), int(d["extent"])) for d in data["dims"]),
                slots=int(data["slots"]),
                indices=str(data["indices"]),
                shape=tuple(int(n) for n in data["shape"]),
                view=None if data.get("view") is None else tuple(int(n) for n in data["view"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, LayoutError):
                raise
            raise LayoutError(f"malformed layout JSON: {exc}") from exc


def natural_layout(shape: tuple[int, ...], slots: int, indices: str | None = None) -> Layout:
    """Row-major layout of a tensor, each axis padded to a power of two (what `encrypt` uses by default)."""
    shape = tuple(int(n) for n in shape)
    indices = indices or "".join(chr(ord("a") + i) for i in range(len(shape)))
    dims = tuple(Dim(index, next_pow2(n), "axis", n) for index, n in zip(indices, shape) if n > 1)
    return Layout(dims=dims, slots=slots, indices=indices, shape=shape)
