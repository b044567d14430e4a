"""Per-layer choice of a ReLU polynomial: the cheapest one (fewest levels) whose error on the layer's calibrated
range meets the layer's error budget.

A polynomial ReLU's absolute error grows with the range it covers (max(x, 0) on [-b, b] is b times ReLU on
[-1, 1]), so a layer whose inputs stay small can take a cheaper polynomial than one whose inputs are large, for
the same absolute error: a Chebyshev interpolant of degree 5 costs 4 levels, the composite minimax ReLU of
einfhe.compiler.activations 10 to 18. `ReLUWithin(bound, max_error)` states what a layer needs; `choose_relu`
tries the candidates (`CANDIDATES`: Chebyshev interpolants of growing degree, then composite ReLUs of growing
depth), measures each one's error on [-bound, bound] and returns the one with the fewest levels that meets the
budget (ties: the lower degree). The model compiler lowers each `ReLUWithin` with its choice, so the level planner
(einfhe.compiler.levels) sees the levels it actually costs, and the level map prints the choice and its error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import ModelError
from ..plan import chebyshev_levels
from .activations import CompositeReLU, relu_error
from .layers import ChebyshevActivation, ReLUWithin

__all__ = ["ReLUChoice", "choose_relu", "relu_choice", "CANDIDATES"]

# (kind, parameters), cheaper first at equal levels: Chebyshev interpolants by degree (the largest degree of each
# level count), then composite ReLUs by their stage degrees and the eps below which they do not approximate the sign
CANDIDATES = (("chebyshev", 2), ("chebyshev", 5), ("chebyshev", 13), ("chebyshev", 27), ("chebyshev", 59),
              ("chebyshev", 119), ("composite", ((7, 7), 2.0**-4)), ("composite", ((7, 15), 2.0**-5)),
              ("composite", ((7, 15, 27), 2.0**-7)))


@dataclass(frozen=True)
class ReLUChoice:
    """The polynomial chosen for one ReLU layer: the activation to lower, its levels and its measured error."""

    activation: object
    label: str
    levels: int
    error: float


def _relu(x):
    return np.maximum(x, 0.0)


def _candidate(kind: str, spec, bound: float) -> ReLUChoice:
    if kind == "chebyshev":
        act = ChebyshevActivation.fit(_relu, -bound, bound, spec)
        error = relu_error(act, bound)
        return ReLUChoice(act, f"Chebyshev deg {spec}", chebyshev_levels(spec), error)
    degrees, eps = spec
    act = CompositeReLU.fit(bound, degrees, eps)
    return ReLUChoice(act, f"composite {'/'.join(map(str, degrees))}", act.levels, act.error)


@lru_cache(maxsize=256)
def choose_relu(bound: float, max_error: float) -> ReLUChoice:
    """The candidate with the fewest levels (then the lowest degree) whose error on [-bound, bound] is at most
    `max_error`; a ModelError naming the best error reachable when none is."""
    if not bound > 0 or not max_error > 0:
        raise ModelError("ReLUWithin needs bound > 0 and max_error > 0", bound=bound, max_error=max_error)
    candidates = [_candidate(kind, spec, float(bound)) for kind, spec in CANDIDATES]
    fitting = [(choice.levels, index) for index, choice in enumerate(candidates) if choice.error <= max_error]
    if not fitting:
        smallest = min(choice.error for choice in candidates)
        raise ModelError(f"no ReLU polynomial reaches an error of {max_error:g} on [-{bound:g}, {bound:g}] (the best "
                         f"is {smallest:.3g}): raise max_error or narrow the range", bound=bound, max_error=max_error)
    return candidates[min(fitting)[1]]


def relu_choice(layer: ReLUWithin) -> ReLUChoice:
    """The polynomial the compiler lowers a `ReLUWithin` layer with."""
    return choose_relu(float(layer.bound), float(layer.max_error))
