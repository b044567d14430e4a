"""The layers a sequential model is made of: linear (float or integer), activations (with the composite ReLU of
einfhe.compiler.activations, and a ReLU within an error budget whose polynomial the compiler chooses), residual
blocks, products of two encrypted branches, feature reorders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from ..errors import ModelError
from .activations import CompositeReLU

__all__ = ["Linear", "IntLinear", "Square", "Quadratic", "ChebyshevActivation", "CompositeReLU", "ReLUWithin",
           "Residual", "MatMul", "Reorder", "Layer"]


@dataclass(frozen=True, eq=False)
class Linear:
    """y = weight @ x + bias, with a float weight of shape (out, in)."""

    weight: np.ndarray
    bias: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class IntLinear:
    """y = (scale * q) @ x + bias with integer q (out, in) and one scale per output row."""

    q: np.ndarray
    scale: np.ndarray
    bias: np.ndarray | None = None
    input_scale: np.ndarray | None = None

    @property
    def weight(self) -> np.ndarray:
        """The real weight the integers stand for (input smoothing folded in)."""
        weight = self.q.astype(np.float64) * np.asarray(self.scale, dtype=np.float64)[:, None]
        return weight if self.input_scale is None else weight * np.asarray(self.input_scale)[None, :]


@dataclass(frozen=True)
class Square:
    """Element-wise x**2 (the polynomial activation of CryptoNets-style models)."""


@dataclass(frozen=True)
class Quadratic:
    """Element-wise a*x**2 + b*x + c: a low-degree stand-in for ReLU/GELU/SiLU on a known input range."""

    a: float
    b: float
    c: float

    @classmethod
    def fit(cls, fn, lo: float, hi: float) -> "Quadratic":
        """Least-squares quadratic through `fn` on Chebyshev nodes of [lo, hi]."""
        if not hi > lo:
            raise ModelError("a polynomial fit needs a range lo < hi", lo=lo, hi=hi)
        nodes = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (np.arange(64) + 0.5) / 64)
        c, b, a = np.polynomial.polynomial.polyfit(nodes, fn(nodes), 2)
        return cls(float(a), float(b), float(c))


@dataclass(frozen=True)
class ChebyshevActivation:
    """Element-wise f(x) ~ c0/2 + sum_k c_k T_k(t) on [lo, hi] (t the affine map onto [-1, 1]), evaluated by
    OpenFHE's Paterson-Stockmeyer routine: degree d costs 3 to 8 levels (see `einfhe.plan.chebyshev_levels`)."""

    coeffs: tuple
    lo: float
    hi: float

    @classmethod
    def fit(cls, fn, lo: float, hi: float, degree: int) -> "ChebyshevActivation":
        """Chebyshev interpolant of `fn` on [lo, hi] of `degree` (OpenFHE's convention: c0 is halved on use)."""
        if not hi > lo:
            raise ModelError("a polynomial fit needs a range lo < hi", lo=lo, hi=hi)
        coeffs = np.polynomial.chebyshev.chebinterpolate(lambda t: fn(lo + (t + 1) * (hi - lo) / 2), degree)
        coeffs[0] *= 2
        return cls(tuple(float(c) for c in coeffs), float(lo), float(hi))

    def __call__(self, x) -> np.ndarray:
        """The series at `x` in float64, as OpenFHE evaluates it (c0 halved)."""
        series = np.array(self.coeffs, dtype=np.float64)
        series[0] /= 2
        t = (2 * np.asarray(x, dtype=np.float64) - self.lo - self.hi) / (self.hi - self.lo)
        return np.polynomial.chebyshev.chebval(t, series)


@dataclass(frozen=True)
class ReLUWithin:
    """ReLU for inputs in [-bound, bound] (the calibrated range) to within `max_error`: the compiler lowers it with
    the cheapest polynomial that meets the budget (einfhe.compiler.activation_choice), printed in the level map."""

    bound: float
    max_error: float


@dataclass(frozen=True)
class Residual:
    """x + f(x), with f the given layers (which keep the width); batched packing only."""

    layers: tuple


@dataclass(frozen=True)
class MatMul:
    """left(x) @ right(x) per sample, both branches encrypted (cipher x cipher, one level; batched packing only).

    Each branch is a tuple of layers applied to the current value (empty: the value itself); its output, flat, is
    viewed as a tensor of `left_shape` (..., m, k) or `right_shape` (..., k, n), leading axes equal, and the
    product is (..., m, n), flat. An elementwise product of two branches is the matmul of (..., 1, 1) views."""

    left: tuple
    right: tuple
    left_shape: tuple
    right_shape: tuple

    @property
    def out_shape(self) -> tuple:
        """The product's shape per sample, (..., m, n)."""
        return tuple(self.left_shape[:-1]) + (self.right_shape[-1],)


@dataclass(frozen=True)
class Reorder:
    """Features permuted (a transpose or permute of the per-sample tensor): output feature i is input feature
    `index[i]`. Free in the batched packing, where it only renames ciphertexts."""

    index: tuple


Layer = Union[Linear, IntLinear, Square, Quadratic, ChebyshevActivation, CompositeReLU, ReLUWithin, Residual, MatMul,
              Reorder]
