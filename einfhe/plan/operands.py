"""What a plan computes on: its cipher and plain operands, and the plain program's values (plain-only einsums and
baby-step giant-step diagonals) that the server derives from the plain operands before the steps run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..layout import Layout

__all__ = ["CipherInput", "PlainInput", "PlainExpr", "Diagonals", "PlainOp"]


@dataclass(frozen=True)
class CipherInput:
    """A cipher operand: the client encrypts it in `layout`."""

    operand: int
    layout: Layout


@dataclass(frozen=True)
class PlainInput:
    """A plain operand the server holds, with its shape."""

    operand: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class PlainExpr:
    """Plain value `out` = numpy.einsum(`subscripts`, *args); an arg `delta:<n>` is the n x n identity."""

    out: str
    subscripts: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Diagonals:
    """Plain value `out`: the pre-rotated extended diagonals of the matrix `src` (zero-padded to d x d) for
    baby-step giant-step with `replicas` = m slots per output row, over `span` = d*m slots (see
    `einfhe.compiler.strategies.bsgs`).

    Row g*baby + b holds, at slot s < span, W[t, (s + m*b) mod d] with t = ((s - m*g*baby) mod span) // m:
    with one replica, W[(s - g*baby) mod d, (s + b) mod d].
    """

    out: str
    src: str
    d: int
    baby: int
    giant: int
    replicas: int
    span: int


PlainOp = Union[PlainExpr, Diagonals]
