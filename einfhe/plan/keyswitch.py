"""Key-switching prices at other key shapes: the calibrated price of an op that switches keys, scaled to the
digits and towers of the parameter set it is priced for.

`einfhe calibrate` measures each op on the parameters `calibration_parameters` gives a ring and depth, with
OpenFHE's default key-switching digits (two or three). A key switch (a rotation, a hoisted rotation's
precompute and each hoisted rotation, the relinearization after a ciphertext product) extends every digit its
ciphertext spans to the towers of Q and P, and brings its two output polynomials back to Q from there, so its
work is about (digits spanned + 2) x (Q towers + P towers) NTTs (`key_switching_work`; the hoist does the
first part, each hoisted rotation the second). The cost model scales these ops by the ratio of that work at the
priced set's key shape to that at the calibrated context's (`CostModel.price`'s `shape`); every other op keeps
its calibrated price. Measured on one thread (BENCHMARKS.md, "MiniLM-L6 encrypted on OpenFHE"): a rotation at
the 15-digit set of 2^16 MiniLM bootstraps on is about 22x one at 3 digits on 2^13 with the same towers, which
this work and N log N put at 2.7 x 9.8 (digits alone, without the 2: 4.0 x 9.8).
"""

from __future__ import annotations

import math
from functools import lru_cache

from ..errors import ParameterError
from ..params import Parameters

__all__ = ["KEY_SWITCHING_OPS", "bootstrap_parameters", "calibration_parameters", "calibrated_shape",
           "key_switching_work"]

# the priced ops that switch keys: a product of ciphertexts relinearizes, a rotation (hoisted or not) switches
# the automorphism's key, and a hoist decomposes the ciphertext into the digits its rotations switch
KEY_SWITCHING_OPS = frozenset({"mul", "rotate", "hoist", "rotate_hoisted"})


def calibration_parameters(ring_dim: int, depth: int) -> Parameters:
    """The 128-bit parameters `einfhe calibrate` measures ring `ring_dim` at `depth` levels on (a small first
    modulus where the ring needs it; their ring may differ from `ring_dim` where none fits it)."""
    return Parameters.derive(depth, ring_dim // 2, small_first_modulus=True)


@lru_cache(maxsize=64)
def calibrated_shape(ring_dim: int, depth: int) -> tuple[int, int, int]:
    """(digits, Q towers, P towers) of the keys `einfhe calibrate` measured ring `ring_dim` at `depth` levels with."""
    return calibration_parameters(ring_dim, depth).key_switching_towers


def key_switching_work(shape: tuple[int, int, int], towers: int) -> int:
    """NTT work of one key switch of a ciphertext of `towers` Q towers with keys of `shape` (digits, Q towers, P
    towers), in tower NTTs: the digits its towers span (OpenFHE's ceil(Q / digits) towers a digit), each extended
    to the towers of Q and P, plus the two polynomials brought back from there."""
    digits, q_towers, p_towers = shape
    return (math.ceil(towers / math.ceil(q_towers / digits)) + 2) * (towers + p_towers)


def bootstrap_parameters(depth: int, slots: int) -> Parameters | None:
    """The 128-bit set `Parameters.derive` gives a bootstrapped plan of `depth` levels between refreshes on `slots`
    slots (None where no ring holds it)."""
    try:
        return Parameters.derive(depth, slots, bootstrap=True)
    except ParameterError:
        return None
