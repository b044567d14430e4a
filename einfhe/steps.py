"""The steps of the plan IR: typed SIMD operations over ciphertext values, the plaintexts they take, and
`value_levels` (the level each value reaches). `einfhe.plan` re-exports every name here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .layout import Layout

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
    "PlainTensor",
    "PlainSlice",
    "Mask",
    "Plaintext",
    "Step",
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
class Load:
    """Ciphertext `ct` of cipher operand `operand`."""

    out: int
    operand: int
    ct: int
    op = "load"

    @property
    def args(self) -> tuple[int, ...]:
        return ()


@dataclass(frozen=True)
class MulPlain:
    """Slot-wise product of a ciphertext with a plaintext (a mask when the plaintext is a `Mask`)."""

    out: int
    src: int
    plain: Plaintext

    @property
    def op(self) -> str:
        return "mask" if isinstance(self.plain, Mask) else "mul_plain"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.src,)


@dataclass(frozen=True)
class AddPlain:
    """Slot-wise sum of a ciphertext and a plaintext (a bias)."""

    out: int
    src: int
    plain: Plaintext
    op = "add_plain"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.src,)


@dataclass(frozen=True)
class Mul:
    """Slot-wise product of two ciphertexts, relinearized."""

    out: int
    a: int
    b: int
    op = "mul"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Add:
    """Slot-wise sum of two ciphertexts."""

    out: int
    a: int
    b: int
    op = "add"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Sub:
    """Slot-wise difference of two ciphertexts (a - b)."""

    out: int
    a: int
    b: int
    op = "sub"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Rotate:
    """Cyclic left rotation of the slots by `offset`: out[t] = src[(t + offset) % slots]."""

    out: int
    src: int
    offset: int
    op = "rotate"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.src,)


@dataclass(frozen=True)
class Rescale:
    """Drop one modulus (one level) after a product, bringing the scale back to the base scale."""

    out: int
    src: int
    op = "rescale"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.src,)


def chebyshev_levels(degree: int) -> int:
    """Levels OpenFHE's EvalChebyshevSeries spends on a series of `degree` (FIXEDMANUAL; a test measures them)."""
    for top, levels in ((2, 3), (5, 4), (13, 5), (27, 6), (59, 7), (119, 8)):
        if degree <= top:
            return levels
    raise PlanError(f"Chebyshev series of degree {degree} are not supported (at most 119)")


@dataclass(frozen=True)
class Chebyshev:
    """p(src) = c0/2 + sum_k c_k T_k(t), t = (2 src - (lo + hi)) / (hi - lo): OpenFHE's EvalChebyshevSeries
    (Paterson-Stockmeyer evaluation), used for smooth activations on a known input range."""

    out: int
    src: int
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
        return chebyshev_levels(len(self.coeffs) - 1)

    @property
    def args(self) -> tuple[int, ...]:
        return (self.src,)


@dataclass(frozen=True)
class Bootstrap:
    """Refresh a ciphertext to a fresh level budget (CKKS bootstrapping, Cheon et al., Eurocrypt 2018)."""

    out: int
    src: int
    op = "bootstrap"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.src,)


@dataclass(frozen=True)
class LevelReduce:
    """Drop one RNS tower without rescaling (the scale is kept): later rotations and products are cheaper."""

    out: int
    src: int
    op = "level_reduce"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.src,)


@dataclass(frozen=True)
class RotatePrecompute:
    """The key-switching digits of `src`, shared by the hoisted rotations of it (Halevi and Shoup 2018, Sec. 5)."""

    out: int
    src: int
    op = "hoist"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.src,)


@dataclass(frozen=True)
class HoistedRotate:
    """Rotation of `src` by `offset` (as `Rotate`) reusing the precomputed digits `digits` of `src`."""

    out: int
    src: int
    digits: int
    offset: int
    op = "rotate_hoisted"

    @property
    def args(self) -> tuple[int, ...]:
        return (self.src, self.digits)


Step = Union[Load, MulPlain, AddPlain, Mul, Add, Sub, Rotate, Rescale, Bootstrap, Chebyshev, LevelReduce,
             RotatePrecompute, HoistedRotate]
STEP_TYPES = {cls.__name__: cls for cls in (Load, MulPlain, AddPlain, Mul, Add, Sub, Rotate, Rescale, Bootstrap, Chebyshev,
                                            LevelReduce, RotatePrecompute, HoistedRotate)}


def value_levels(steps) -> dict[int, int]:
    """Multiplicative level of every value of a step list (inputs at level 0; a rescale or a level drop adds one)."""
    levels: dict[int, int] = {}
    for step in steps:
        if isinstance(step, (Load, Bootstrap)):
            levels[step.out] = 0
        elif isinstance(step, (Rescale, LevelReduce)):
            levels[step.out] = levels[step.src] + 1
        elif isinstance(step, Chebyshev):
            levels[step.out] = levels[step.src] + step.levels
        else:
            levels[step.out] = max(levels[a] for a in step.args)
    return levels
