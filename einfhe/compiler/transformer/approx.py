"""The non-polynomial parts of a transformer as polynomials on calibrated ranges, evaluated in floating point exactly
as the encrypted plan pieces (einfhe.compiler.transformer.pieces) evaluate them, each with its error bound.

- `PolySoftmax`: exp by a Chebyshev interpolant on the calibrated score range, shifted by the range's top so every
  term lies in (0, 1]; the row sum's reciprocal by a Chebyshev first guess refined by Newton's iteration
  y <- y (2 - s y), which squares the relative error each step (Goldschmidt's division, as in THOR and NEXUS).
  Subtracting the row maximum, the usual guard, needs a comparison circuit (dozens of levels); a calibrated score
  range gives the same guarantee for the inputs it was calibrated on, at no level.
- `PolyLayerNorm`: mean and variance are sums; 1 / sqrt(var + eps) by a Chebyshev first guess refined by Newton's
  iteration y <- y (3 - v y^2) / 2 on the calibrated variance range (its relative error e goes to about 1.5 e^2).
- `PolyGelu`: GELU by a Chebyshev interpolant on the calibrated input range.

Each reports its error measured on a dense grid of its range (`error`); the softmax also bounds its output error
from the exp fit and the reciprocal's error (`PolySoftmax.error_bound`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import ModelError
from ...plan import chebyshev_levels
from ..layers import ChebyshevActivation

__all__ = ["PolySoftmax", "PolyLayerNorm", "PolyGelu", "gelu", "newton_levels"]

NEWTON_RECIPROCAL_LEVELS = 2   # s*y, then y*(2 - s*y)
NEWTON_INVSQRT_LEVELS = 2      # y*y beside (v/2)*y, their product, then 1.5*y minus it
MAX_NEWTON_STEPS = 12


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU, x * Phi(x) (erf form, as BERT and MiniLM use)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _series(act: ChebyshevActivation, x: np.ndarray) -> np.ndarray:
    """A Chebyshev activation evaluated as OpenFHE evaluates it (c0 halved)."""
    c = np.array(act.coeffs)
    c[0] /= 2
    return np.polynomial.chebyshev.chebval((2 * np.asarray(x, dtype=np.float64) - act.lo - act.hi)
                                           / (act.hi - act.lo), c)


def newton_levels(first_guess: ChebyshevActivation, steps: int, per_step: int) -> int:
    """Levels of a Chebyshev first guess followed by `steps` Newton steps of `per_step` levels each."""
    return chebyshev_levels(len(first_guess.coeffs) - 1) + steps * per_step


def _grid(lo: float, hi: float) -> np.ndarray:
    return np.linspace(lo, hi, 20001)


@dataclass(frozen=True)
class PolySoftmax:
    """softmax over the last axis on scores in [lo, hi] whose shifted exp sums lie in [sum_lo, sum_hi]."""

    exp: ChebyshevActivation
    reciprocal: ChebyshevActivation
    newton_steps: int
    length: int
    exp_error: float
    reciprocal_error: float

    @classmethod
    def fit(cls, lo: float, hi: float, length: int, sum_lo: float, sum_hi: float, *, exp_degree: int = 15,
            reciprocal_degree: int = 15, tolerance: float = 1e-5) -> "PolySoftmax":
        """Fit exp(x - hi) on [lo, hi] and the reciprocal on the sums' range (widened by the exp fit's error over
        `length` terms) with the fewest Newton steps that bring its relative error below `tolerance`; raise
        ModelError when Newton's iteration would not converge from the first guess."""
        if not hi > lo or not 0 < sum_lo < sum_hi or length < 1 or not 0 < tolerance < 1:
            raise ModelError("PolySoftmax.fit needs lo < hi, 0 < sum_lo < sum_hi, length >= 1, 0 < tolerance < 1",
                             lo=lo, hi=hi, sum_lo=sum_lo, sum_hi=sum_hi)
        exp = ChebyshevActivation.fit(lambda x: np.exp(x - hi), lo, hi, exp_degree)
        grid = _grid(lo, hi)
        exp_error = float(np.abs(_series(exp, grid) - np.exp(grid - hi)).max())
        s_lo, s_hi = sum_lo - length * exp_error, sum_hi + length * exp_error
        if s_lo <= 0:
            raise ModelError("the exp fit's error swamps the smallest row sum: raise exp_degree", exp_error=exp_error)
        reciprocal = ChebyshevActivation.fit(lambda s: 1.0 / s, s_lo, s_hi, reciprocal_degree)
        sums = _grid(s_lo, s_hi)
        first = np.abs(1 - sums * _series(reciprocal, sums)).max()
        if first >= 1:
            raise ModelError(f"the reciprocal's first guess is off by {first:.2f} (relative): Newton's iteration "
                             "needs < 1; raise reciprocal_degree or narrow the sums' range", sum_lo=s_lo, sum_hi=s_hi)
        for newton_steps in range(MAX_NEWTON_STEPS + 1):
            made = cls(exp, reciprocal, newton_steps, length, exp_error, 0.0)
            measured = float(np.abs(1 - sums * made.invert(sums)).max())
            if measured < tolerance:
                return cls(exp, reciprocal, newton_steps, length, exp_error, measured)
        raise ModelError(f"the reciprocal stays {measured:.2g} (relative) from 1/s after {MAX_NEWTON_STEPS} Newton "
                         "steps: raise reciprocal_degree or narrow the sums' range", sum_lo=s_lo, sum_hi=s_hi)

    @property
    def levels(self) -> int:
        """Levels one softmax consumes: exp, the padding mask, the row-sum selector, the reciprocal, the product."""
        return chebyshev_levels(len(self.exp.coeffs) - 1) + 2 + newton_levels(
            self.reciprocal, self.newton_steps, NEWTON_RECIPROCAL_LEVELS) + 1

    def invert(self, sums: np.ndarray) -> np.ndarray:
        """1/s by the first guess and Newton's steps, in floating point."""
        y = _series(self.reciprocal, sums)
        for _ in range(self.newton_steps):
            y = y * (2 - sums * y)
        return y

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """The approximate softmax over the last axis, as the encrypted piece computes it."""
        e = _series(self.exp, scores)
        return e * self.invert(e.sum(axis=-1, keepdims=True))

    @property
    def error_bound(self) -> float:
        """Bound on |approximate - exact softmax| per entry for scores in range: with d the exp fit's error, S the
        exact shifted sum (S >= s_lo' = the smallest sum less length * d) and r the reciprocal's relative error,
        |e'/S'(1+r) - e/S| <= (d + length * d) / s_lo' * (1 + r) + r."""
        d, r = self.exp_error, self.reciprocal_error
        s_lo = self.reciprocal.lo
        return (d + self.length * d) / s_lo * (1 + r) + r


@dataclass(frozen=True)
class PolyLayerNorm:
    """LayerNorm over the last axis, with 1/sqrt(var + eps) by a first guess and Newton's steps on [lo, hi] (the
    calibrated variance range plus eps)."""

    gamma: np.ndarray
    beta: np.ndarray
    eps: float
    inverse_sqrt: ChebyshevActivation
    newton_steps: int
    error: float

    @classmethod
    def fit(cls, gamma, beta, var_lo: float, var_hi: float, *, eps: float = 1e-12, degree: int = 15,
            tolerance: float = 1e-5) -> "PolyLayerNorm":
        """Fit the inverse square root on [var_lo + eps, var_hi + eps] with the fewest Newton steps that bring its
        relative error below `tolerance`; raise ModelError when Newton's iteration would not converge from the first
        guess (relative error must stay below 1)."""
        if not 0 <= var_lo < var_hi or eps < 0 or var_lo + eps <= 0 or not 0 < tolerance < 1:
            raise ModelError("PolyLayerNorm.fit needs 0 <= var_lo < var_hi and var_lo + eps > 0",
                             var_lo=var_lo, var_hi=var_hi, eps=eps)
        gamma, beta = np.asarray(gamma, dtype=np.float64), np.asarray(beta, dtype=np.float64)
        if gamma.ndim != 1 or gamma.shape != beta.shape:
            raise ModelError("LayerNorm's gamma and beta must be vectors of one length",
                             gamma=gamma.shape, beta=beta.shape)
        lo, hi = var_lo + eps, var_hi + eps
        first = ChebyshevActivation.fit(lambda v: 1 / np.sqrt(v), lo, hi, degree)
        grid = _grid(lo, hi)
        if np.abs(1 - np.sqrt(grid) * _series(first, grid)).max() >= 1:
            raise ModelError("the inverse square root's first guess is off by more than 100%: raise degree or "
                             "narrow the variance range", var_lo=var_lo, var_hi=var_hi)
        for newton_steps in range(MAX_NEWTON_STEPS + 1):
            made = cls(gamma, beta, float(eps), first, newton_steps, 0.0)
            error = float(np.abs(1 - np.sqrt(grid) * made.inverse_sqrt_of(grid)).max())
            if error < tolerance:
                return cls(gamma, beta, float(eps), first, newton_steps, error)
        raise ModelError(f"the inverse square root stays {error:.2g} (relative) from 1/sqrt(v) after "
                         f"{MAX_NEWTON_STEPS} Newton steps: raise degree or narrow the variance range",
                         var_lo=var_lo, var_hi=var_hi)

    @property
    def levels(self) -> int:
        """Levels one LayerNorm consumes: the squares' row sums (two), the inverse square root, the output scale."""
        return 2 + newton_levels(self.inverse_sqrt, self.newton_steps, NEWTON_INVSQRT_LEVELS) + 1

    def inverse_sqrt_of(self, v: np.ndarray) -> np.ndarray:
        """1/sqrt(v) by the first guess and Newton's steps, in floating point."""
        y = _series(self.inverse_sqrt, v)
        for _ in range(self.newton_steps):
            y = 1.5 * y - (y * y) * (0.5 * v * y)
        return y

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The approximate LayerNorm over the last axis, as the encrypted piece computes it."""
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=-1, keepdims=True)
        var = (x * x).mean(axis=-1, keepdims=True) - mean * mean
        return (x - mean) * self.gamma * self.inverse_sqrt_of(var + self.eps) + self.beta

    def exact(self, x: np.ndarray) -> np.ndarray:
        """The exact LayerNorm (numpy), the reference the approximation is measured against."""
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(x.var(axis=-1, keepdims=True) + self.eps) * self.gamma + self.beta


@dataclass(frozen=True)
class PolyGelu:
    """GELU on [lo, hi] by a Chebyshev interpolant, with its max error there."""

    series: ChebyshevActivation
    error: float

    @classmethod
    def fit(cls, lo: float, hi: float, degree: int = 31) -> "PolyGelu":
        """Interpolate GELU on Chebyshev nodes of [lo, hi] and measure the error on a dense grid."""
        series = ChebyshevActivation.fit(gelu, lo, hi, degree)
        grid = _grid(lo, hi)
        return cls(series, float(np.abs(_series(series, grid) - gelu(grid)).max()))

    @property
    def levels(self) -> int:
        """Levels one evaluation consumes (OpenFHE's Paterson-Stockmeyer)."""
        return chebyshev_levels(len(self.series.coeffs) - 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The approximate GELU, as the encrypted piece computes it."""
        return _series(self.series, x)
