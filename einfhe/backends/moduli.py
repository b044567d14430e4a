"""The primes of an OpenFHE FIXEDMANUAL modulus chain, in the order its rescales drop them.

Under FIXEDMANUAL, OpenFHE treats every ciphertext as if it kept the scale 2^scale_bits, but a rescale divides
by the prime it drops, which is 2^scale_bits only to within about k * 2N (the primes are the NTT-friendly ones
nearest it). Each rescale so leaves the result off by the factor 2^scale_bits / q: a relative error of ~2.7e-7
at N=2^14 and 40-bit scaling, larger than the encryption noise (~5e-8 per slot) and the dominant error of
every plaintext product. Knowing q, the backend encodes each product's plaintext times q / 2^scale_bits, and
the rescale lands exactly on 2^scale_bits again.

OpenFHE's parameter generation (ckksrns-parametergeneration.cpp, ParamsGenCKKSRNSInternal, fixed scaling) takes
the first prime above 2^scale_bits that is 1 mod 2N as the top modulus (dropped by the first rescale), then
alternates the previous prime below and the next prime above for the levels under it. `rescale_primes`
finds these primes as divisors of the chain's modulus Q (exact integer, no primality test) and orders them so.
"""

from __future__ import annotations

__all__ = ["rescale_primes", "scale_corrections"]

# how far from 2^scale_bits (in steps of 2N) the search for a chain's primes goes before giving up
_SEARCH_STEPS = 1 << 16


def rescale_primes(modulus: int, scale_bits: int, ring_dim: int, levels: int) -> tuple[int, ...] | None:
    """The prime the rescale at each level 0..levels-1 drops, from the chain's modulus Q; None when Q's
    scaling primes are not OpenFHE's fixed-scaling ones (then no correction is known)."""
    step = 2 * ring_dim
    centre = 1 << scale_bits
    above, below, rest = [], [], int(modulus)
    first_above = centre + 1  # the candidates are the numbers 1 mod 2N on both sides of 2^scale_bits
    first_below = centre + 1 - step
    for k in range(_SEARCH_STEPS):
        if len(above) + len(below) == levels:
            break
        for candidate, found in ((first_above + k * step, above), (first_below - k * step, below)):
            if candidate > 1 and rest % candidate == 0:
                found.append(candidate)
                rest //= candidate
    if len(above) + len(below) != levels or not above or rest.bit_length() <= scale_bits:
        return None
    order = [above.pop(0)]
    while above or below:
        source = below if len(order) % 2 == 1 else above
        if not source:
            return None
        order.append(source.pop(0))
    return tuple(order)


def scale_corrections(primes: tuple[int, ...] | None, scale_bits: int, levels: int) -> tuple[float, ...]:
    """The factor q_l / 2^scale_bits to encode a product's plaintext with at each level (1.0 where unknown)."""
    if primes is None:
        return (1.0,) * levels
    return tuple(q / float(1 << scale_bits) for q in primes)
