"""The non-polynomial parts of a transformer as polynomials on calibrated ranges, evaluated in floating point exactly
as the encrypted plan pieces (einfhe.compiler.transformer.pieces) evaluate them, each with its error bound.

- `PolySoftmax`: each row is first centred on its mean (a row sum: one level; with padded keys masked out, the mean
  of the real keys' scores, `centred_scores`), then exp by a Chebyshev interpolant
  on the calibrated range of centred scores, and the row sum's reciprocal by a Chebyshev first guess refined by
  Newton's iteration y <- y (2 - s y) (the first guess fitted for the least relative error: `inverse_fit`), which squares the relative error each step (Goldschmidt's division, as in
  THOR and NEXUS). Subtracting the row maximum, the usual guard, needs a comparison circuit (dozens of levels); the
  row mean is linear, and since a row's maximum is at least its mean, the centred row's exp sum is at least 1 for
  every input: the exp fit's absolute error stays small against every sum, and the reciprocal's range is
  [1, calibrated top] rather than the span of the rows' maxima.
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
from .keymask import check_length

__all__ = ["PolySoftmax", "centred_scores", "PolyLayerNorm", "PolyGelu", "gelu", "newton_levels", "inverse_fit", "newton_inverse",
           "fit_newton_inverse", "FIRST_GUESS_DEGREES"]

NEWTON_RECIPROCAL_LEVELS = 2   # s*y, then y*(2 - s*y)
NEWTON_INVSQRT_LEVELS = 2      # y*y beside (v/2)*y, their product, then 1.5*y minus it
MAX_NEWTON_STEPS = 12
FIRST_GUESS_DEGREES = (5, 13, 27, 59)  # the largest degree at each level count of OpenFHE's Chebyshev series


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU, x * Phi(x) (erf form, as BERT and MiniLM use)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def newton_levels(first_guess: ChebyshevActivation, steps: int, per_step: int) -> int:
    """Levels of a Chebyshev first guess followed by `steps` Newton steps of `per_step` levels each."""
    return chebyshev_levels(len(first_guess.coeffs) - 1) + steps * per_step


def inverse_fit(power: float, lo: float, hi: float, degree: int, iterations: int = 100) -> ChebyshevActivation:
    """The polynomial p of `degree` on [lo, hi] (0 < lo) minimising max |1 - x**power * p(x)|: a first guess of
    x**-power for Newton's iteration, whose convergence depends on that relative error (an interpolant of x**-power
    is accurate in absolute terms, and far off in relative ones where x is small); Lawson's iteratively reweighted
    least squares (Lawson 1961) on a Chebyshev basis, returned as a series in OpenFHE's convention (c0 doubled)."""
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (np.arange(4000) + 0.5) / 4000)
    t = (2 * x - lo - hi) / (hi - lo)
    basis = np.polynomial.chebyshev.chebvander(t, degree) * (x ** power)[:, None]
    weights = np.full(x.size, 1.0 / x.size)
    coeffs = np.zeros(degree + 1)
    for _ in range(iterations):
        root = np.sqrt(weights)
        coeffs = np.linalg.lstsq(basis * root[:, None], root, rcond=None)[0]
        weights = weights * np.abs(basis @ coeffs - 1)
        weights /= weights.sum()
    coeffs[0] *= 2
    return ChebyshevActivation(tuple(float(c) for c in coeffs), float(lo), float(hi))


def newton_inverse(power: float, x: np.ndarray, first_guess: ChebyshevActivation, steps: int) -> np.ndarray:
    """x**-power (power 1 or 0.5) by the first guess and `steps` Newton steps, in floating point as the pieces
    compute it: y (2 - x y) for the reciprocal, 1.5 y - y^2 (x/2) y for the inverse square root."""
    y = first_guess(x)
    for _ in range(steps):
        y = y * (2 - x * y) if power == 1 else 1.5 * y - (y * y) * (0.5 * x * y)
    return y


def fit_newton_inverse(power: float, lo: float, hi: float, degrees: tuple[int, ...],
                       tolerance: float) -> tuple[ChebyshevActivation, int, float]:
    """The first guess (one of `degrees`, by `inverse_fit`) and Newton step count that bring x**-power's relative
    error on [lo, hi] below `tolerance` in the fewest levels: (first guess, steps, measured relative error).
    Raises ModelError when no degree gets there within MAX_NEWTON_STEPS."""
    grid, per_step = _grid(lo, hi), NEWTON_RECIPROCAL_LEVELS if power == 1 else NEWTON_INVSQRT_LEVELS
    best, worst = None, 1.0
    for degree in degrees:
        first = inverse_fit(power, lo, hi, degree)
        for steps in range(MAX_NEWTON_STEPS + 1):
            error = float(np.abs(1 - grid ** power * newton_inverse(power, grid, first, steps)).max())
            if not error < 1:
                break
            if error < tolerance:
                levels = newton_levels(first, steps, per_step)
                if best is None or levels < best[0]:
                    best = (levels, first, steps, error)
                break
        worst = min(worst, error)
    if best is None:
        raise ModelError(f"x**-{power:g} stays {worst:.2g} (relative) from exact after {MAX_NEWTON_STEPS} Newton "
                         f"steps from first guesses of degrees {degrees}: narrow the range", lo=lo, hi=hi)
    return best[1:]


def _grid(lo: float, hi: float) -> np.ndarray:
    return np.linspace(lo, hi, 20001)


def centred_scores(scores: np.ndarray, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scores as the softmax's exp meets them, and which keys are real: each row less its mean; with `length`,
    the padded keys' scores (past the first `length`) zeroed first and the mean taken over the real ones, so a row's
    largest real score is at least its centre (its real exps sum to at least 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    if length is None:
        return scores - scores.mean(axis=-1, keepdims=True), np.ones(scores.shape[-1])
    length = check_length(length, scores.shape[-1])
    real = (np.arange(scores.shape[-1]) < length).astype(np.float64)
    scores = scores * real
    return scores - scores.sum(axis=-1, keepdims=True) / length, real


@dataclass(frozen=True)
class PolySoftmax:
    """softmax over the last axis (rows of `length`) for rows whose centred scores lie in [lo, hi] (exp and
    reciprocal on those calibrated ranges), after `squarings` halvings of the scores undone by squaring.

    A range too wide for one polynomial exp (MiniLM's first layer has centred scores past 30: e^30 overflows a CKKS
    ciphertext's headroom) is divided by 2^k first, and softmax(2z) = softmax(z)^2 / sum(softmax(z)^2) applied k
    times (Cho, Hong, Kim, Lee, Lee, Shin, "Fast and Accurate Homomorphic Softmax Evaluation", CCS 2024): every
    value stays in [0, 1] and each renormalising reciprocal works on [1/length, 1]."""

    exp: ChebyshevActivation
    reciprocal: ChebyshevActivation
    newton_steps: int
    length: int
    exp_error: float
    reciprocal_error: float
    squarings: int = 0
    renormal: ChebyshevActivation | None = None
    renormal_steps: int = 0
    renormal_error: float = 0.0

    @classmethod
    def fit(cls, lo: float, hi: float, length: int, sum_hi: float | None = None, *, squarings: int = 0,
            exp_degree: int = 13, reciprocal_degrees: tuple[int, ...] = FIRST_GUESS_DEGREES,
            tolerance: float = 1e-5) -> "PolySoftmax":
        """Fit exp(x / 2^squarings) on [lo, hi] (scores less their row mean) and the reciprocal on the sums' range
        [1, sum_hi] (calibrated; at most length * exp(hi / 2^squarings), the default), widened by the exp fit's
        error over `length` terms, by the first guess and Newton steps that bring its relative error below
        `tolerance` in the fewest levels (`fit_newton_inverse`); with squarings, the renormalising reciprocal on
        [1/length, 1] likewise."""
        shrink = 2.0 ** -squarings
        top = length * math.exp(hi * shrink)
        if not lo < 0 < hi or length < 1 or not 0 < tolerance < 1 or squarings < 0 or (
                sum_hi is not None and not 1 < sum_hi <= top):
            raise ModelError("PolySoftmax.fit needs lo < 0 < hi (centred scores), length >= 1, 0 < tolerance < 1, "
                             "squarings >= 0 and 1 < sum_hi <= length * exp(hi / 2^squarings)",
                             lo=lo, hi=hi, length=length, sum_hi=sum_hi)
        exp = ChebyshevActivation.fit(lambda x: np.exp(x * shrink), lo, hi, exp_degree)
        grid = _grid(lo, hi)
        exp_error = float(np.abs(exp(grid) - np.exp(grid * shrink)).max())
        s_lo, s_hi = 1 - length * exp_error, (sum_hi or top) + length * exp_error
        if s_lo <= 0.5:
            raise ModelError("the exp fit's error swamps the row sums: raise exp_degree or squarings",
                             exp_error=exp_error)
        reciprocal, steps, error = fit_newton_inverse(1.0, s_lo, s_hi, reciprocal_degrees, tolerance)
        if not squarings:
            return cls(exp, reciprocal, steps, length, exp_error, error)
        renormal = fit_newton_inverse(1.0, 0.99 / length, 1.01, reciprocal_degrees, tolerance)
        return cls(exp, reciprocal, steps, length, exp_error, error, squarings, *renormal)

    @property
    def levels(self) -> int:
        """Levels one softmax consumes: the row mean, exp, the key mask (the padded keys' and the rows' padding's
        exps zeroed; an unmasked piece on rows without padding skips it), the row-sum selector, the reciprocal,
        the product, and per squaring the square, its row sum's selector, the reciprocal and the product."""
        base = 1 + chebyshev_levels(len(self.exp.coeffs) - 1) + 2 + newton_levels(
            self.reciprocal, self.newton_steps, NEWTON_RECIPROCAL_LEVELS) + 1
        if not self.squarings:
            return base
        return base + self.squarings * (2 + newton_levels(self.renormal, self.renormal_steps,
                                                          NEWTON_RECIPROCAL_LEVELS) + 1)

    def invert(self, sums: np.ndarray) -> np.ndarray:
        """1/s by the first guess and Newton's steps, in floating point."""
        return newton_inverse(1.0, sums, self.reciprocal, self.newton_steps)

    def __call__(self, scores: np.ndarray, length: int | None = None) -> np.ndarray:
        """The approximate softmax over the last axis, as the encrypted piece computes it; with `length`, over the
        first `length` keys only (`centred_scores`; the padded keys' exps zeroed)."""
        centred, real = centred_scores(scores, length)
        e = self.exp(centred) * real
        p = e * self.invert(e.sum(axis=-1, keepdims=True))
        for _ in range(self.squarings):
            q = p * p
            p = q * newton_inverse(1.0, q.sum(axis=-1, keepdims=True), self.renormal, self.renormal_steps)
        return p

    @property
    def error_bound(self) -> float:
        """Bound on |approximate - exact softmax| per entry for centred scores in range. Before any squaring, with d
        the exp fit's error, S >= 1 the exact centred sum and r the reciprocal's relative error,
        |e'/S' (1 + r) - e/S| <= (d + length * d) / (1 - length * d) * (1 + r) + r. A squaring turns an error e
        into (4 e + (length + 1) e^2) / (1/length - 2 e - length e^2) * (1 + r') + r' (r' the renormalising
        reciprocal's relative error; sum p^2 >= 1/length). A masked row of L <= length real keys meets the same
        bound (L terms, sum p^2 >= 1/L)."""
        d, r = self.exp_error, self.reciprocal_error
        e = (d + self.length * d) / self.reciprocal.lo * (1 + r) + r
        n, r = self.length, self.renormal_error
        for _ in range(self.squarings):
            floor = 1 / n - 2 * e - n * e * e
            e = (4 * e + (n + 1) * e * e) / floor * (1 + r) + r if floor > 0 else 1.0
        return min(e, 1.0)


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
    def fit(cls, gamma, beta, var_lo: float, var_hi: float, *, eps: float = 1e-12,
            degrees: tuple[int, ...] = FIRST_GUESS_DEGREES, tolerance: float = 1e-5) -> "PolyLayerNorm":
        """Fit the inverse square root on [var_lo + eps, var_hi + eps]: the first guess and Newton steps that bring
        its relative error below `tolerance` in the fewest levels (`fit_newton_inverse`)."""
        if not 0 <= var_lo < var_hi or eps < 0 or var_lo + eps <= 0 or not 0 < tolerance < 1:
            raise ModelError("PolyLayerNorm.fit needs 0 <= var_lo < var_hi and var_lo + eps > 0",
                             var_lo=var_lo, var_hi=var_hi, eps=eps)
        gamma, beta = np.asarray(gamma, dtype=np.float64), np.asarray(beta, dtype=np.float64)
        if gamma.ndim != 1 or gamma.shape != beta.shape:
            raise ModelError("LayerNorm's gamma and beta must be vectors of one length",
                             gamma=gamma.shape, beta=beta.shape)
        lo, hi = var_lo + eps, var_hi + eps
        first, steps, error = fit_newton_inverse(0.5, lo, hi, degrees, tolerance)
        return cls(gamma, beta, float(eps), first, steps, error)

    @property
    def levels(self) -> int:
        """Levels one LayerNorm consumes: the squares' row sums (two), the inverse square root, the output scale."""
        return 2 + newton_levels(self.inverse_sqrt, self.newton_steps, NEWTON_INVSQRT_LEVELS) + 1

    def inverse_sqrt_of(self, v: np.ndarray) -> np.ndarray:
        """1/sqrt(v) by the first guess and Newton's steps, in floating point."""
        return newton_inverse(0.5, v, self.inverse_sqrt, self.newton_steps)

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
    def fit(cls, lo: float, hi: float, degree: int = 27) -> "PolyGelu":
        """Interpolate GELU on Chebyshev nodes of [lo, hi] and measure the error on a dense grid."""
        series = ChebyshevActivation.fit(gelu, lo, hi, degree)
        grid = _grid(lo, hi)
        return cls(series, float(np.abs(series(grid) - gelu(grid)).max()))

    @property
    def levels(self) -> int:
        """Levels one evaluation consumes (OpenFHE's Paterson-Stockmeyer)."""
        return chebyshev_levels(len(self.series.coeffs) - 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The approximate GELU, as the encrypted piece computes it."""
        return self.series(x)
