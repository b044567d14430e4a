"""What every lowering strategy works on: the values of a contraction and the `Lowerer` that holds the plan
being built (its `PlanBuilder`, the layouts chosen for fresh cipher operands, the plain program)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ...errors import PlanError
from ...layout import Layout
from ...plan import PlainOp
from ..builder import Packed, PlanBuilder

__all__ = ["PlainValue", "FreeCipher", "Value", "Contraction", "Lowerer"]


@dataclass(frozen=True)
class PlainValue:
    """A plain tensor of the plain program: its name, indices and shape."""

    name: str
    indices: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class FreeCipher:
    """A cipher operand whose layout the plan still chooses (the client packs it as asked)."""

    operand: int
    indices: str
    shape: tuple[int, ...]


Value = Union[PlainValue, FreeCipher, Packed]


@dataclass(frozen=True)
class Contraction:
    """One pairwise (or unary) contraction: its operand values, output indices, summed indices, sizes, and
    whether it is the plan's last."""

    args: tuple[Value, ...]
    out: str
    reduced: str
    sizes: tuple[tuple[str, int], ...]
    final: bool = False

    @property
    def size(self) -> dict[str, int]:
        """Map each index to its size."""
        return dict(self.sizes)


@dataclass
class Lowerer:
    """The plan under construction: the builder, fresh operands' chosen layouts and the plain program."""

    builder: PlanBuilder
    program: list[PlainOp] = field(default_factory=list)
    chosen: dict[int, Layout] = field(default_factory=dict)

    @property
    def slots(self) -> int:
        """Slots per ciphertext."""
        return self.builder.slots

    def load_free(self, value: FreeCipher, layout: Layout) -> Packed:
        """Fix the layout of a fresh cipher operand (the client encrypts it so) and load it."""
        if value.operand in self.chosen:
            raise PlanError("a cipher operand is used twice", operand=value.operand)
        self.chosen[value.operand] = layout
        return self.builder.load(value.operand, layout)

    def checkpoint(self) -> tuple:
        """A mark to `rollback` to."""
        return self.builder.checkpoint(), len(self.program), dict(self.chosen)

    def rollback(self, mark: tuple) -> None:
        """Undo everything done since `checkpoint` returned `mark`."""
        self.builder.rollback(mark[0])
        del self.program[mark[1]:]
        self.chosen = dict(mark[2])

    def new_uploads(self, mark: tuple) -> list[Layout]:
        """Layouts of the fresh cipher operands fixed since `mark` (what the client will encrypt)."""
        return [layout for operand, layout in self.chosen.items() if operand not in mark[2]]
