"""Noise-flooded CKKS decryption, for results that leave the client (IND-CPA-D security).

A CKKS decryption returns the message plus the ciphertext's noise, and that noise is a known linear function of
the secret key: whoever sees decrypted results of ciphertexts they can relate to (the server that computed them,
or anyone the results are shared with) can recover the secret key from a handful of them (Li and Micciancio,
"On the Security of Homomorphic Encryption on Approximate Numbers", EUROCRYPT 2021). OpenFHE's
NOISE_FLOODING_DECRYPT mode adds Gaussian noise far larger than the computation's own at decryption, which
makes CKKS IND-CPA-D secure, at a price in precision (see docs/noise-flooding.md for the figures).

It needs the computation's noise, measured beforehand: the same computation is run once under a context made
with `NoiseFlooding()` (OpenFHE's EXEC_NOISE_ESTIMATION: its decryption yields log2 of the noise, not the
values), then under fresh keys made with `NoiseFlooding(estimate=...)`, whose decryption floods. OpenFHE's 64-bit
build then sets the scaling moduli to 59 bits and the first to 60 whatever the parameters ask, so a flooded
context needs `Parameters.for_noise_flooding` (which keeps 128-bit security with those moduli).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ParameterError

__all__ = ["NoiseFlooding", "measure_noise", "FLOODING_SCALE_BITS", "FLOODING_FIRST_MOD_BITS"]

FLOODING_SCALE_BITS = 59      # OpenFHE's MAX_MODULUS_SIZE - 1 in its 64-bit build
FLOODING_FIRST_MOD_BITS = 60
_TAIL = 7.0                   # standard deviations: a slot's flooding error exceeds the bound with odds ~1e-12


@dataclass(frozen=True)
class NoiseFlooding:
    """How a context decrypts: measuring the computation's noise (`estimate` None) or flooding it.

    `statistical_security`: an adversary's advantage is at most 2^-s; `queries`: the decryptions of related
    ciphertexts an adversary may see (OpenFHE's NumAdversarialQueries). Both raise the flooding noise.
    """

    estimate: float | None = None
    statistical_security: int = 30
    queries: int = 1

    def __post_init__(self) -> None:
        if self.estimate is not None and not -60 < self.estimate < 60:
            raise ParameterError("the noise estimate is log2 of the measured noise: expected a value in (-60, 60)",
                                 estimate=self.estimate)
        if not 1 <= self.statistical_security <= 128 or self.queries < 1:
            raise ParameterError("statistical security must lie in 1..128 bits and queries be at least 1",
                                 statistical_security=self.statistical_security, queries=self.queries)

    @property
    def measuring(self) -> bool:
        """True for the estimation context, whose decryption measures noise instead of returning values."""
        return self.estimate is None

    @property
    def log2_std(self) -> float:
        """log2 of the flooding noise's standard deviation per coefficient, as OpenFHE sizes it:
        s/2 + log2(sqrt(12 * queries)) + estimate."""
        if self.estimate is None:
            raise ParameterError("an estimation context does not flood; make one with NoiseFlooding(estimate=...)")
        return self.statistical_security // 2 + math.log2(math.sqrt(12 * self.queries)) + self.estimate

    def slot_std(self, ring_dim: int) -> float:
        """The flooding noise's standard deviation in one decrypted slot: a coefficient's, times sqrt(N) through
        the decoding (measured: tests/einfhe/params/test_noise_flooding.py), over OpenFHE's 59-bit scale."""
        return 2.0 ** self.log2_std * math.sqrt(ring_dim) / 2.0 ** FLOODING_SCALE_BITS

    def slot_error(self, ring_dim: int) -> float:
        """A bound on the flooding noise in one decrypted slot: 7 of its standard deviations."""
        return _TAIL * self.slot_std(ring_dim)


def measure_noise(ctx, tensor) -> float:
    """log2 of the largest noise among an encrypted tensor's ciphertexts, decrypted under an estimation context
    (`Context.for_plan(..., flooding=NoiseFlooding())`): the estimate for `NoiseFlooding(estimate=...)`."""
    return max(ctx.backend.measure_noise(ct) for ct in tensor.cts)
