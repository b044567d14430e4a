"""How far a decrypted CKKS result may lie from the exact one, from the parameters and the computation.

Cheon, Kim, Kim, Song, "Homomorphic Encryption for Arithmetic of Approximate Numbers" (2017): a fresh
encryption's error is at most B_clean = 8*sqrt(2)*sigma*N + 6*sigma*sqrt(N) + 16*sigma*sqrt(h*N) (Lemma 1),
and a rescale adds at most B_rs = sqrt(N/3) * (3 + 8*sqrt(h)) (Lemma 2), both in units of the scale
2^scale_bits, with sigma = 3.2 and h the secret's Hamming weight (at most N for ternary secrets). Errors grow
with the magnitude of the values multiplied and add up over the terms a contraction sums; each level adds one
rescale and each key switch (a rotation or a relinearization) an error of the same size as a rescale (Lemma 3,
with the special modulus P at least as large as a digit of Q). `error_bound` combines these.
"""

from __future__ import annotations

import math

from .parameters import Parameters

__all__ = ["error_bound"]

SIGMA = 3.2


def error_bound(params: Parameters, magnitude: float, terms: int = 1, depth: int = 1, keyswitches: int = 0) -> float:
    """Bound on |decrypted - exact| per slot for sums of `terms` products of size `magnitude` at `depth` levels
    after `keyswitches` rotations and relinearizations."""
    n, h = params.ring_dim, params.ring_dim
    fresh = 8 * math.sqrt(2) * SIGMA * n + 6 * SIGMA * math.sqrt(n) + 16 * SIGMA * math.sqrt(h * n)
    rescale = math.sqrt(n / 3) * (3 + 8 * math.sqrt(h))
    per_unit = (fresh + (max(1, depth) + max(0, keyswitches)) * rescale) / 2.0 ** params.scale_bits
    return per_unit * max(1.0, magnitude) * max(1, terms)
