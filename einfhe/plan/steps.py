"""The steps of the plan IR: typed SIMD operations over ciphertext values, the plaintexts they take, and
`value_levels` (the level each value reaches). `einfhe.plan` re-exports every name here.

Every step is a frozen dataclass deriving from `Step`: its output value id `out`, its own fields, the op name it
prints and is priced as (`op`), and which of its fields name input values (`inputs`, read back as `args`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

from ..errors import PlanError
from ..layout import Layout

__all__ = [
    "Load",
    "MulPlain",
    "AddPlain",
    "Mul",
    "Add",
    "Sub",
    "Rotate",
    "Rescale",
    "Bootstrap",
    "Chebyshev",
    "chebyshev_levels",
    "RotatePrecompute",
    "HoistedRotate",
    "LevelReduce",
    "value_levels",
    "step_level",
    "PlainTensor",
    "PlainSlice",
    "Mask",
    "Plaintext",
    "Step",
    "UnaryStep",
    "BinaryStep",
    "STEP_TYPES",
    "OPS",
    "ROTATION_OPS",
]

OPS = ("load", "mul_plain", "mask", "mul", "add", "sub", "add_plain", "rotate", "hoist", "rotate_hoisted", "rescale",
       "level_reduce", "bootstrap", "chebyshev")
ROTATION_OPS = ("rotate", "rotate_hoisted")


# -- plaintext references ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PlainTensor:
    """Ciphertext `ct` of the plain value `name` packed in `layout`."""

    name: str
    layout: Layout
    ct: int


@dataclass(frozen=True)
class Mask:
    """A 0/1 vector of `slots` slots, 1 on the half-open ranges `ranges`."""

    ranges: tuple[tuple[int, int], ...]
    slots: int


@dataclass(frozen=True)
class PlainSlice:
    """Row `index` of the plain value `name` (a stack of vectors) packed in the one-ciphertext `layout`."""

    name: str
    layout: Layout
    index: int


Plaintext = Union[PlainTensor, PlainSlice, Mask]


# -- steps ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """A step of the plan: computes value `out`; `op` names it, `inputs` lists its fields that hold input values."""

    out: int
    op: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()

    @property
    def args(self) -> tuple[int, ...]:
        """The input value ids, in `inputs` order."""
        return tuple(getattr(self, name) for name in self.inputs)


@dataclass(frozen=True)
class UnaryStep(Step):
    """A step on one ciphertext value, `src`."""

    src: int
    inputs = ("src",)


@dataclass(frozen=True)
class BinaryStep(Step):
    """A slot-wise step on two ciphertext values, `a` and `b`."""

    a: int
    b: int
    inputs = ("a", "b")


@dataclass(frozen=True)
class Load(Step):
    """Ciphertext `ct` of cipher operand `operand`."""

    operand: int
    ct: int
    op = "load"


@dataclass(frozen=True)
class MulPlain(UnaryStep):
    """Slot-wise product of a ciphertext with a plaintext (a mask when the plaintext is a `Mask`)."""

    plain: Plaintext

    @property
    def op(self) -> str:
        """`mask` when the plaintext is a 0/1 mask, else `mul_plain` (both are one plaintext product)."""
        return "mask" if isinstance(self.plain, Mask) else "mul_plain"


@dataclass(frozen=True)
class AddPlain(UnaryStep):
    """Slot-wise sum of a ciphertext and a plaintext (a bias)."""

    plain: Plaintext
    op = "add_plain"


class Mul(BinaryStep):
    """Slot-wise product of two ciphertexts, relinearized."""

    op = "mul"


class Add(BinaryStep):
    """Slot-wise sum of two ciphertexts."""

    op = "add"


class Sub(BinaryStep):
    """Slot-wise difference of two ciphertexts (a - b)."""

    op = "sub"


@dataclass(frozen=True)
class Rotate(UnaryStep):
    """Cyclic left rotation of the slots by `offset`: out[t] = src[(t + offset) % slots]."""

    offset: int
    op = "rotate"


class Rescale(UnaryStep):
    """Drop one modulus (one level) after a product, bringing the scale back to the base scale."""

    op = "rescale"


def chebyshev_levels(degree: int, lo: float | None = None, hi: float | None = None) -> int:
    """Levels OpenFHE's EvalChebyshevSeries spends on a series of `degree` (FIXEDMANUAL; a test measures them): one
    fewer on the domain [lo, hi] = [-1, 1], where it skips the linear map of the input onto [-1, 1]."""
    for top, levels in ((2, 3), (5, 4), (13, 5), (27, 6), (59, 7), (119, 8)):
        if degree <= top:
            return levels - (lo == -1 and hi == 1)
    raise PlanError(f"Chebyshev series of degree {degree} are not supported (at most 119)")


@dataclass(frozen=True)
class Chebyshev(UnaryStep):
    """p(src) = c0/2 + sum_k c_k T_k(t), t = (2 src - (lo + hi)) / (hi - lo): OpenFHE's EvalChebyshevSeries
    (Paterson-Stockmeyer evaluation), used for smooth activations on a known input range."""

    coeffs: tuple
    lo: float
    hi: float
    op = "chebyshev"

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeffs", tuple(float(c) for c in self.coeffs))
        if len(self.coeffs) < 3 or not self.hi > self.lo:
            raise PlanError("a Chebyshev step needs degree >= 2 and lo < hi", lo=self.lo, hi=self.hi)

    @property
    def levels(self) -> int:
        """Levels this evaluation spends."""
        return chebyshev_levels(len(self.coeffs) - 1, self.lo, self.hi)


class Bootstrap(UnaryStep):
    """Refresh a ciphertext to a fresh level budget (CKKS bootstrapping, Cheon et al., Eurocrypt 2018)."""

    op = "bootstrap"


class LevelReduce(UnaryStep):
    """Drop one RNS tower without rescaling (the scale is kept): later rotations and products are cheaper."""

    op = "level_reduce"


class RotatePrecompute(UnaryStep):
    """The key-switching digits of `src`, shared by the hoisted rotations of it (Halevi and Shoup 2018, Sec. 5)."""

    op = "hoist"


@dataclass(frozen=True)
class HoistedRotate(UnaryStep):
    """Rotation of `src` by `offset` (as `Rotate`) reusing the precomputed digits `digits` of `src`."""

    digits: int
    offset: int
    op = "rotate_hoisted"
    inputs = ("src", "digits")


STEP_TYPES = {cls.__name__: cls for cls in (Load, MulPlain, AddPlain, Mul, Add, Sub, Rotate, Rescale, Bootstrap, Chebyshev,
                                            LevelReduce, RotatePrecompute, HoistedRotate)}


def step_level(step: Step, levels: dict[int, int]) -> int:
    """The level of `step`'s output, given the levels of the values before it (see `value_levels`)."""
    if isinstance(step, (Load, Bootstrap)):
        return 0
    if isinstance(step, (Rescale, LevelReduce)):
        return levels[step.src] + 1
    if isinstance(step, Chebyshev):
        return levels[step.src] + step.levels
    return max(levels[a] for a in step.args)


def value_levels(steps) -> dict[int, int]:
    """Multiplicative level of every value of a step list (inputs at level 0; a rescale or a level drop adds one)."""
    levels: dict[int, int] = {}
    for step in steps:
        levels[step.out] = step_level(step, levels)
    return levels
