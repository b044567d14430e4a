"""Parse and validate einsum specs with numpy's semantics.

`parse_einsum("...ij,...jk", (2, 3, 4), (2, 4, 5))` gives an `EinsumSpec` with the ellipsis expanded into
fresh index letters, the implicit output made explicit and one size per index, or raises `EinsumError` with
the reason numpy.einsum would refuse it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from .errors import EinsumError

__all__ = ["EinsumSpec", "parse_einsum", "check_subscripts", "real_array", "refuse_complex"]

_LETTERS = string.ascii_letters


@dataclass(frozen=True)
class EinsumSpec:
    """A validated einsum: one index string per operand, the output indices and each index's size."""

    inputs: tuple[str, ...]
    output: str
    shapes: tuple[tuple[int, ...], ...]
    size_items: tuple[tuple[str, int], ...]

    @property
    def sizes(self) -> dict[str, int]:
        """Map each index letter to its (broadcast) size."""
        return dict(self.size_items)

    @property
    def empty(self) -> bool:
        """True when an index has size 0: the result is numpy's (empty, or zeros) whatever the operands hold."""
        return any(n == 0 for _, n in self.size_items)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the einsum's result."""
        sizes = self.sizes
        return tuple(sizes[index] for index in self.output)

    def __str__(self) -> str:
        return ",".join(self.inputs) + "->" + self.output


def _split(subscripts: str) -> tuple[list[str], str | None]:
    text = subscripts.replace(" ", "")
    if text.count("->") > 1:
        raise EinsumError("an einsum spec has at most one '->'", spec=subscripts)
    if "->" in text:
        lhs, out = text.split("->")
    else:
        lhs, out = text, None
    terms = lhs.split(",")
    allowed = set(_LETTERS) | {"."}
    for term in terms + ([out] if out is not None else []):
        bad = set(term) - allowed
        if bad:
            raise EinsumError(
                f"invalid character(s) {''.join(sorted(bad))!r}: use letters, ',', '->' and '...'",
                spec=subscripts,
            )
        if term.replace("...", "").count(".") or term.count("...") > 1:
            raise EinsumError("'.' may only appear as a single '...' per term", spec=subscripts)
    return terms, out


def check_subscripts(subscripts: object) -> str:
    """Return `subscripts` if it is a string spec; refuse numpy's interleaved form (and anything else) by type."""
    if isinstance(subscripts, str):
        return subscripts
    if isinstance(subscripts, np.ndarray) or hasattr(subscripts, "layout") or hasattr(subscripts, "shape"):
        raise EinsumError(
            "the interleaved form einsum(operand, [axes], ...) is not supported: use the string form, "
            "e.g. einsum('ij,j->i', W, x)",
            got=type(subscripts).__name__,
        )
    raise EinsumError("the einsum spec must be a string such as 'ij,j->i'", got=type(subscripts).__name__)


def refuse_complex(value: object, **context: object) -> None:
    """Raise `EinsumError` when `value` holds complex numbers (CKKS here encodes real numbers only)."""
    if np.iscomplexobj(value):
        raise EinsumError(
            "complex operands are not supported (only real numbers are encoded): pass the real and imaginary "
            "parts as separate operands",
            **context,
        )


def real_array(value: object, **context: object) -> np.ndarray:
    """`value` as a float64 array; a complex one is refused (see `refuse_complex`)."""
    array = np.asarray(value)
    refuse_complex(array, **context)
    try:
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EinsumError(f"an operand must hold real numbers: {exc}", dtype=str(array.dtype), **context) from None


def parse_einsum(subscripts: str, *shapes: tuple[int, ...]) -> EinsumSpec:
    """Validate `subscripts` against operand shapes and return the explicit, ellipsis-free spec.

    Sizes follow numpy's broadcasting: a size-1 axis takes the other operands' size for its index, 0 included
    (an index of size 0 makes the result empty, or zeros where it is summed: see `EinsumSpec.empty`)."""
    subscripts = check_subscripts(subscripts)
    terms, out = _split(subscripts)
    if len(terms) != len(shapes):
        raise EinsumError(
            f"the spec names {len(terms)} operand(s) but {len(shapes)} were given", spec=subscripts
        )
    shapes = tuple(tuple(int(n) for n in shape) for shape in shapes)
    for position, shape in enumerate(shapes):
        if any(n < 0 for n in shape):
            raise EinsumError("an axis size cannot be negative", spec=subscripts, operand=position, shape=shape)

    used = set("".join(terms) + (out or ""))
    pool = [c for c in _LETTERS if c not in used]
    ellipsis_rank = 0
    for term, shape in zip(terms, shapes):
        named = len(term.replace("...", ""))
        if "..." in term:
            if named > len(shape):
                raise EinsumError(
                    f"term {term!r} names {named} axes but its operand has only {len(shape)}",
                    spec=subscripts,
                    shape=shape,
                )
            ellipsis_rank = max(ellipsis_rank, len(shape) - named)
        elif named != len(shape):
            raise EinsumError(
                f"term {term!r} names {named} axes but its operand has {len(shape)}",
                spec=subscripts,
                shape=shape,
            )
    if ellipsis_rank > len(pool):
        raise EinsumError("too many axes under '...'", spec=subscripts)
    ellipsis_letters = "".join(pool[:ellipsis_rank])

    inputs = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            rank = len(shape) - len(term.replace("...", ""))
            term = term.replace("...", ellipsis_letters[ellipsis_rank - rank :])
        inputs.append(term)

    if out is None:
        counts = {c: "".join(inputs).count(c) for c in set("".join(inputs))}
        named = sorted(c for c, n in counts.items() if n == 1 and c not in ellipsis_letters)
        output = ellipsis_letters + "".join(named)
    else:
        if "..." in out:
            out = out.replace("...", ellipsis_letters)
        output = out
    if len(set(output)) != len(output):
        raise EinsumError("an output index appears more than once", spec=subscripts, output=output)
    missing = set(output) - set("".join(inputs))
    if missing:
        raise EinsumError(
            f"output index(es) {''.join(sorted(missing))!r} appear in no operand", spec=subscripts
        )

    sizes: dict[str, int] = {}
    for position, (term, shape) in enumerate(zip(inputs, shapes)):
        seen: dict[str, int] = {}
        for index, n in zip(term, shape):
            if index in seen and seen[index] != n:
                raise EinsumError(
                    f"repeated index {index!r} has sizes {seen[index]} and {n} in one operand",
                    spec=subscripts,
                    operand=position,
                )
            seen[index] = n
            known = sizes.get(index, 1)
            if n != 1 and known != 1 and n != known:
                raise EinsumError(
                    f"index {index!r} has size {known} in one operand and {n} in operand {position}",
                    spec=subscripts,
                    shapes=shapes,
                )
            sizes[index] = known if n == 1 else n
    order = {c: i for i, c in enumerate(dict.fromkeys("".join(inputs)))}
    return EinsumSpec(
        inputs=tuple(inputs),
        output=output,
        shapes=shapes,
        size_items=tuple(sorted(sizes.items(), key=lambda item: order[item[0]])),
    )
