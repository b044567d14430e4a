"""ReLU for encrypted deep nets: x * (1 + sign(x)) / 2, with sign(x) a composite of odd minimax polynomials.

Lee, Lee, Kim, No, "Minimax approximate comparison by composite polynomials" (and the ReLU of "Low-complexity deep
convolutional neural networks on FHE using multiplexed parallel convolutions", Lee et al., ICML 2022, which Orion
follows): a single polynomial approximating sign on [-1, -eps] U [eps, 1] needs a degree of about 1/eps, a composite
p_k o ... o p_1 of odd polynomials of small degree reaches the same error at a depth of the sum of their log2
degrees. Stage 1 is the odd polynomial of degree d_1 closest to 1 in max norm on [eps, 1]; stage i+1 the one closest
to 1 on the range stage i leaves [1 - delta_i, 1 + delta_i]. Each stage is a minimax fit on a dense grid by
Lawson's iteratively reweighted least squares (Lawson 1961), in numpy. `CompositeReLU.fit` scales the calibrated
range [-bound, bound] to [-1, 1] inside stage 1 and reports the error on the whole range (`error`, measured on a
grid of 20,001 points refined around its worst point): below `eps * bound` the sign is not approximated and ReLU is
off by up to `eps * bound` there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev, polynomial

from ..errors import ModelError
from ..plan import chebyshev_levels

__all__ = ["CompositeReLU", "minimax_odd_sign", "relu_error"]


def minimax_odd_sign(degree: int, lo: float, hi: float, iterations: int = 200) -> tuple[np.ndarray, float]:
    """Power-basis coefficients of the odd polynomial of `degree` closest to 1 in max norm on [lo, hi] (0 < lo < hi),
    and that max error (Lawson's algorithm on 2,000 points)."""
    x = np.linspace(lo, hi, 2000)
    basis = np.stack([x ** k for k in range(1, degree + 1, 2)], axis=1)
    weights = np.full(x.size, 1.0 / x.size)
    coeffs = None
    for _ in range(iterations):
        root = np.sqrt(weights)
        coeffs = np.linalg.lstsq(basis * root[:, None], root, rcond=None)[0]
        error = np.abs(basis @ coeffs - 1)
        weights = weights * error
        weights /= weights.sum()
    full = np.zeros(degree + 1)
    full[1::2] = coeffs
    return full, float(np.abs(basis @ coeffs - 1).max())


@dataclass(frozen=True)
class CompositeReLU:
    """max(x, 0) on [-bound, bound] as x * (1 + s(x)) / 2, s the composite sign; each stage a Chebyshev series
    (OpenFHE's convention, c0 doubled) on its domain."""

    stages: tuple[tuple[tuple[float, ...], float, float], ...]
    bound: float
    eps: float
    error: float

    @property
    def levels(self) -> int:
        """Levels one evaluation consumes: each stage's series, then the product with x."""
        return sum(chebyshev_levels(len(coeffs) - 1) for coeffs, _, _ in self.stages) + 1

    def sign(self, x: np.ndarray) -> np.ndarray:
        """The composite sign, evaluated in floating point as the encrypted program does."""
        s = np.asarray(x, dtype=np.float64)
        for coeffs, lo, hi in self.stages:
            c = np.array(coeffs)
            c[0] /= 2
            s = chebyshev.chebval((2 * s - lo - hi) / (hi - lo), c)
        return s

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The approximate ReLU in floating point."""
        x = np.asarray(x, dtype=np.float64)
        return x * (1 + self.sign(x)) / 2

    @classmethod
    def fit(cls, bound: float, degrees: tuple[int, ...] = (7, 15, 27), eps: float = 2.0**-7) -> "CompositeReLU":
        """Fit the stages for inputs in [-bound, bound] (the calibrated range) and measure the ReLU error there."""
        if bound <= 0 or not 0 < eps < 1 or not degrees or any(d < 1 or d % 2 == 0 for d in degrees):
            raise ModelError("CompositeReLU.fit needs bound > 0, 0 < eps < 1 and odd stage degrees",
                             bound=bound, eps=eps)
        stages, lo, hi, scale = [], eps, 1.0, 1.0 / bound
        for degree in degrees:
            power, delta = minimax_odd_sign(degree, lo, hi)
            reach = hi / scale if not stages else hi  # stage 1 reads x itself, on [-bound, bound]
            # p(x * scale) as a Chebyshev series on [-reach, reach]
            scaled = power * (scale * reach) ** np.arange(degree + 1)
            coeffs = chebyshev.poly2cheb(scaled)
            coeffs[0] *= 2
            stages.append((tuple(float(c) for c in coeffs), -reach, reach))
            top = float(np.abs(polynomial.polyval(np.linspace(0, hi, 4001), power)).max())
            lo, hi, scale = 1 - delta, max(1 + delta, top), 1.0
        made = cls(tuple(stages), float(bound), float(eps), 0.0)
        return cls(tuple(stages), float(bound), float(eps), made.measure_error())

    def measure_error(self) -> float:
        """max |approximation - ReLU| on [-bound, bound] (relu_error)."""
        return relu_error(self, self.bound)


def relu_error(fn, bound: float) -> float:
    """max |fn(x) - max(x, 0)| on [-bound, bound]: a grid of 20,001 points, refined around its worst point."""
    grid = np.linspace(-bound, bound, 20001)
    errors = np.abs(fn(grid) - np.maximum(grid, 0))
    worst, step = grid[int(np.argmax(errors))], grid[1] - grid[0]
    fine = np.clip(np.linspace(worst - 2 * step, worst + 2 * step, 4001), -bound, bound)
    return float(max(errors.max(), np.abs(fn(fine) - np.maximum(fine, 0)).max()))
