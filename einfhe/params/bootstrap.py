"""CKKS bootstrapping as OpenFHE runs it: the level budget, the levels it consumes, and the scale it accepts.

OpenFHE's `EvalBootstrap` (FIXEDMANUAL scaling) refuses a ciphertext unless the first modulus exceeds the
scaling factor by at most the *correction factor*, the power of two by which it shrinks the message before the
approximate modular reduction: "Degree [first_mod_bits - scale_bits] must be less than or equal to the correction
factor". Its default correction factor falls as the ring and the slot count grow (12 at N=2^6, 7 at N=2^16 with
8,192 slots), so a 60-bit first modulus over a 50-bit scale bootstraps on the small test rings and fails at 2^16.
einfhe passes the correction factor to `EvalBootstrapSetup` itself (`correction_factor`, a fit of OpenFHE 1.6's
default over rings 2^6..2^16, checked against it by a test) and derives the scale from it, so the parameters
and OpenFHE agree by construction. The gap between the first modulus and the scale is also the headroom of the
values (a bootstrapped ciphertext's slots must stay below 2^(gap - 1) in magnitude), and it costs precision:
OpenFHE's bootstrapping error grows about one bit per bit of gap (measured at N=2^10 with 64 slots: 2^-16 at a
gap of 1, 2^-14 at 5, 2^-11 at 7, 2^-7 at 9; at N=2^12 with 2,048 slots 2^-11, 2^-9 and 2^-9 at gaps 1, 5, 7).
einfhe takes a gap of BOOTSTRAP_GAP = 5 bits (values below 16) where the correction factor allows it.

The scale itself bounds the precision: at ring 2^16 with 128 slots and values up to 14.4, one bootstrap's max
error was 4.8e-3 at a 2^54 scale and 0.26 at 2^48 (bench/bootstrap_bench.py, BENCHMARKS.md), about a bit lost per
bit of scale, and a deep CNN bootstrapped twice at 2^48 no longer decrypted. `Parameters.derive` therefore keeps
bootstrapped sets at BOOTSTRAP_MIN_SCALE_BITS or more and makes room for deeper stretches by more key-switching
digits (a smaller P, larger keys) rather than a smaller scale.
"""

from __future__ import annotations

import math

__all__ = ["BOOTSTRAP_LEVEL_BUDGET", "BOOTSTRAP_DEPTH", "BOOTSTRAP_CHAIN_LEVELS", "BOOTSTRAP_GAP",
           "BOOTSTRAP_MIN_SCALE_BITS", "correction_factor", "bootstrap_scale_bits", "bootstrap_headroom"]

# Level budget (CoeffsToSlots, SlotsToCoeffs) and the levels bootstrapping consumes with uniform ternary secrets
# (CryptoContext.GetBootstrapDepth; a test checks the figure).
BOOTSTRAP_LEVEL_BUDGET = (2, 2)
BOOTSTRAP_DEPTH = 18
# Levels bootstrapping adds to the modulus chain: its own, and one more that a bootstrap's input keeps (OpenFHE's
# EvalBootstrap refuses a ciphertext on its last tower: "Removing last element of DCRTPoly renders it invalid"),
# so a refreshed stretch of `depth` levels can be bootstrapped again.
BOOTSTRAP_CHAIN_LEVELS = BOOTSTRAP_DEPTH + 1
# the gap einfhe uses where the correction factor allows it: values below 2^4, a few bits of precision given up
BOOTSTRAP_GAP = 5
# the smallest scale Parameters.derive gives a bootstrapped set (module docstring)
BOOTSTRAP_MIN_SCALE_BITS = 54


def correction_factor(ring_dim: int, slots: int) -> int:
    """The correction factor (bits) einfhe asks OpenFHE's bootstrapping to use for `slots` slots in ring `ring_dim`.

    >>> correction_factor(65536, 8192), correction_factor(4096, 2048), correction_factor(64, 8)
    (7, 9, 12)
    """
    return max(1, round(-0.36 * math.log2(ring_dim) - 0.12 * math.log2(max(1, slots)) + 14.7))


def bootstrap_scale_bits(ring_dim: int, slots: int, first_mod_bits: int) -> int:
    """The scale einfhe bootstraps at in this ring with this first modulus: a gap of BOOTSTRAP_GAP bits, or less
    where OpenFHE's correction factor demands it."""
    return first_mod_bits - min(BOOTSTRAP_GAP, correction_factor(ring_dim, slots))


def bootstrap_headroom(scale_bits: int, first_mod_bits: int) -> float:
    """The magnitude slot values must stay below when they are bootstrapped (2^(gap - 1))."""
    return 2.0 ** (first_mod_bits - scale_bits - 1)
