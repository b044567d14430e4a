"""CKKS parameter sets: derived from a plan at 128-bit security, validated when given explicitly.

The security bound is the HomomorphicEncryption.org standard's table for ternary secrets at 128-bit classical
security (Albrecht et al., "Homomorphic Encryption Standard", 2018, Table 1), which is what OpenFHE enforces:
the ring dimension N must satisfy log2(Q*P) <= MAX_LOG_QP[N]. Q is the ciphertext modulus (the first modulus
plus one scaling modulus per level) and P the key-switching modulus, estimated as OpenFHE's hybrid key
switching sizes it (three digits unless `digits` says otherwise; P a whole number of 60-bit primes above the
largest digit).

With `small_first_modulus`, when the default 60-bit first modulus does not fit a ring, `derive` tries that ring
again with a 55-bit first modulus and three key-switching digits (`digits`, OpenFHE's HYBRID dnum), which keeps P
to one 60-bit prime: this is how depths 1 and 2 fit N=2^13 at 128-bit (OpenFHE accepts first moduli up to 57
and 55 bits there; a test holds it to that). The price is headroom: a result must stay below about
2^(first_mod_bits - scale_bits - 1) in magnitude (2^14 instead of 2^19), so only a caller that accepts it asks.

With `lift`, a set that fits the ring with one more level is `lifted`: the client encrypts one level up, at
scale 2^scale_bits * q, and rescales before the upload (the idea of OpenFHE's FLEXIBLEAUTOEXT), which divides the
fresh encryption noise by q; the upload has the towers it had, the keys one more. A 64x64 matvec's error: 5.1e-6
-> 1.5e-6 at N=2^14, 9.3e-7 -> 2.9e-7 at N=2^13 (median of 4 key sets), at the same speed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from ..errors import ParameterError
from .bootstrap import (BOOTSTRAP_CHAIN_LEVELS, BOOTSTRAP_DEPTH, BOOTSTRAP_MIN_SCALE_BITS, bootstrap_scale_bits,
                        correction_factor)

__all__ = ["Parameters", "MAX_LOG_QP", "estimate_log_qp", "SECURE", "INSECURE", "SMALL_RING_FIRST_MOD_BITS"]

# 2^16 is OpenFHE's extension of the standard table (checked: it accepts 1740 bits there and refuses 1780)
MAX_LOG_QP = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881, 65536: 1747}
SECURE = "128-bit classical (HE standard)"
INSECURE = "INSECURE-TEST-ONLY"
_DIGITS = 3
_P_PRIME_BITS = 60
# the first modulus tried on a ring the default one does not fit, with _DIGITS key-switching digits (see above)
SMALL_RING_FIRST_MOD_BITS = 55


def key_switching_shape(depth: int, scale_bits: int, first_mod_bits: int, digits: int = 0) -> tuple[int, int, int]:
    """(digits, Q towers, P towers) of OpenFHE's hybrid key switching over a chain of `depth` levels: `digits`
    digits, or when 0 its default (three above 3 levels, else two); P is 60-bit primes above the largest digit."""
    digits = digits or (_DIGITS if depth > 3 else 2)
    towers = depth + 1
    largest_digit_bits = first_mod_bits + (math.ceil(towers / digits) - 1) * scale_bits
    return digits, towers, math.ceil((largest_digit_bits + 1) / _P_PRIME_BITS)


def estimate_log_qp(depth: int, scale_bits: int, first_mod_bits: int, digits: int = 0) -> int:
    """Bits of Q*P for a CKKS context of `depth` levels with OpenFHE's hybrid key switching in `digits` digits
    (0: OpenFHE's default, see key_switching_shape)."""
    p_towers = key_switching_shape(depth, scale_bits, first_mod_bits, digits)[2]
    return first_mod_bits + depth * scale_bits + _P_PRIME_BITS * p_towers


def _moduli_to_try(ring_dim: int, slots: int, scale_bits: int | None, first_mod_bits: int, bootstrap: bool,
                   towers: int):
    """(key-switching digits, first modulus bits, scale bits) candidates for one ring, in order of preference: for
    bootstrapping, the default digits at the largest scale down to BOOTSTRAP_MIN_SCALE_BITS, then more digits."""
    if scale_bits or not bootstrap:
        return [(0, first_mod_bits, scale_bits or 40)]
    gap = first_mod_bits - bootstrap_scale_bits(ring_dim, slots, first_mod_bits)
    moduli = [(first, first - gap) for first in range(first_mod_bits, BOOTSTRAP_MIN_SCALE_BITS + gap - 1, -1)]
    return [(digits, first, bits) for digits in (0, *range(_DIGITS + 1, towers + 1)) for first, bits in moduli]


def _deepest_bootstrapped(slots: int, first_mod_bits: int) -> int:
    """The most levels between bootstraps any 128-bit ring holds at BOOTSTRAP_MIN_SCALE_BITS or more."""
    ring, bound = max(MAX_LOG_QP.items())
    gap = first_mod_bits - bootstrap_scale_bits(ring, slots, first_mod_bits)
    depth = 0
    while estimate_log_qp(depth + 1 + BOOTSTRAP_CHAIN_LEVELS, BOOTSTRAP_MIN_SCALE_BITS,
                          BOOTSTRAP_MIN_SCALE_BITS + gap, depth + 2 + BOOTSTRAP_CHAIN_LEVELS) <= bound:
        depth += 1
    return depth


@dataclass(frozen=True)
class Parameters:
    """One RNS-CKKS parameter set: ring dimension, slots, depth, scaling sizes, its security claim, the
    key-switching digit count (0: OpenFHE's default) and whether the encryption is lifted."""

    ring_dim: int
    slots: int
    depth: int
    scale_bits: int = 40
    first_mod_bits: int = 60
    security: str = SECURE
    bootstrap: bool = False
    digits: int = 0
    lifted: bool = False

    @classmethod
    def derive(cls, depth: int, slots: int, scale_bits: int | None = None, first_mod_bits: int = 60,
               bootstrap: bool = False, small_first_modulus: bool = False, lift: bool = False) -> "Parameters":
        """The smallest secure ring for `depth` levels (between bootstraps, when `bootstrap`) and `slots` slots.

        With `bootstrap` and no `scale_bits`, the scale is the largest OpenFHE bootstraps in that ring
        (einfhe.params.bootstrap: 55 bits over a 60-bit first modulus, a gap OpenFHE accepts at 2^16); when that
        modulus is too large for the depth, the first modulus and the scale shrink together, bit by bit, down
        to BOOTSTRAP_MIN_SCALE_BITS (`first_mod_bits` is then an upper bound), and past that more key-switching
        digits shrink P instead (larger keys), as a smaller scale leaves a bootstrap too little precision.
        `small_first_modulus` lets a ring the first modulus does not fit take a 55-bit one, and `lift` lifts the
        encryption where the ring has room for it (module docstring)."""
        depth = max(1, int(depth))
        chain = depth + (BOOTSTRAP_CHAIN_LEVELS if bootstrap else 0)
        log_qp = estimate_log_qp(chain, scale_bits or 40, first_mod_bits)
        small, scale = min(first_mod_bits, SMALL_RING_FIRST_MOD_BITS), scale_bits or 40
        for ring_dim, bound in sorted(MAX_LOG_QP.items()):
            if ring_dim < 2 * slots:
                continue
            for lifted in (True, False) if lift and not bootstrap else (False,):
                total = depth + (BOOTSTRAP_CHAIN_LEVELS if bootstrap else 0) + lifted
                for digits, first, bits in _moduli_to_try(ring_dim, slots, scale_bits, first_mod_bits, bootstrap,
                                                          total + 1):
                    if estimate_log_qp(total, bits, first, digits) <= bound:
                        return cls(ring_dim, slots, depth, bits, first, SECURE, bootstrap, digits, lifted).validate()
                # OpenFHE spreads at most _DIGITS towers over _DIGITS digits (one each; four in three it refuses)
                if (small_first_modulus and not bootstrap and scale < small and total + 1 <= _DIGITS
                        and estimate_log_qp(total, scale, small, total + 1) <= bound):
                    return cls(ring_dim, slots, depth, scale, small, SECURE, bootstrap, total + 1, lifted).validate()
        if bootstrap and not scale_bits:
            raise ParameterError(
                f"no 128-bit ring holds {depth} levels between bootstraps at a scale of 2^{BOOTSTRAP_MIN_SCALE_BITS} "
                f"or more (below it a bootstrap keeps too little precision): bootstrap more often (max_depth <= "
                f"{_deepest_bootstrapped(slots, first_mod_bits)})", depth=depth, slots=slots)
        raise ParameterError(
            f"no ring up to 2^16 holds depth {depth} ({log_qp} bits of modulus) with {slots} slots at 128-bit "
            "security: reduce the depth (quantize, or split the program) or the slot count",
            depth=depth,
            slots=slots,
        )

    @classmethod
    def for_noise_flooding(cls, depth: int, slots: int, *, secure: bool = True) -> "Parameters":
        """Parameters for a noise-flooded context (einfhe.params.flooding): 59-bit scaling and a 60-bit first modulus, as
        OpenFHE sets them for flooding, and one level more than `depth` so that results keep 59 bits above the
        scale (with the first modulus alone only |values| < 1 would decrypt). The ring is the smallest 128-bit
        one for that modulus; `secure=False` gives the tiny test ring instead."""
        make = cls.derive if secure else cls.insecure_for_tests
        return make(depth + 1, slots, scale_bits=59, first_mod_bits=60)

    @classmethod
    def insecure_for_tests(cls, depth: int, slots: int, scale_bits: int | None = None, first_mod_bits: int = 60,
                           bootstrap: bool = False) -> "Parameters":
        """A tiny ring with NO security, for fast tests only; the server refuses it."""
        ring_dim = max(2 * slots, 16)
        scale_bits = scale_bits or (bootstrap_scale_bits(ring_dim, slots, first_mod_bits) if bootstrap else 40)
        return cls(ring_dim, slots, max(1, depth), scale_bits, first_mod_bits, INSECURE, bootstrap).validate()

    @property
    def secure(self) -> bool:
        """True for parameters that claim (and meet) 128-bit security."""
        return self.security == SECURE

    @property
    def total_depth(self) -> int:
        """Levels of the modulus chain: the program's, plus bootstrapping's own and its input's when enabled, plus
        the lifted encryption's."""
        return self.depth + (BOOTSTRAP_CHAIN_LEVELS if self.bootstrap else 0) + int(self.lifted)

    @property
    def key_switching_towers(self) -> tuple[int, int, int]:
        """(digits, Q towers, P towers) of this set's key-switching keys as OpenFHE's hybrid key switching makes
        them: `digits` digits or OpenFHE's default (three above a chain of 3 levels, else two), each key over the
        whole chain and P; a test checks the sizes this gives against OpenFHE's serialized keys."""
        return key_switching_shape(self.total_depth, self.scale_bits, self.first_mod_bits, self.digits)

    @property
    def log_qp(self) -> int:
        """Estimated bits of the full modulus Q*P."""
        return estimate_log_qp(self.total_depth, self.scale_bits, self.first_mod_bits, self.digits)

    def validate(self) -> "Parameters":
        """Check the set is well formed and, unless marked insecure, 128-bit secure; return it."""
        if self.ring_dim < 16 or self.ring_dim & (self.ring_dim - 1):
            raise ParameterError("the ring dimension must be a power of two >= 16", ring_dim=self.ring_dim)
        if self.slots < 1 or self.slots & (self.slots - 1) or 2 * self.slots > self.ring_dim:
            raise ParameterError(
                "slots must be a power of two at most half the ring dimension", slots=self.slots, ring_dim=self.ring_dim
            )
        if self.depth < 1 or self.depth > 60:
            raise ParameterError("depth must lie in 1..60", depth=self.depth)
        if not 20 <= self.scale_bits <= 59 or not self.scale_bits < self.first_mod_bits <= 60:
            raise ParameterError(
                "need 20 <= scale_bits < first_mod_bits <= 60",
                scale_bits=self.scale_bits,
                first_mod_bits=self.first_mod_bits,
            )
        if not 0 <= self.digits <= self.total_depth + 1:
            raise ParameterError("digits (key-switching dnum) must lie in 0..towers (0: OpenFHE's default)",
                                 digits=self.digits, depth=self.depth)
        gap = self.first_mod_bits - self.scale_bits
        if self.bootstrap and gap > correction_factor(self.ring_dim, self.slots):
            raise ParameterError(
                f"OpenFHE bootstraps in ring {self.ring_dim} with {self.slots} slots only when the first modulus "
                f"exceeds the scale by at most {correction_factor(self.ring_dim, self.slots)} bits (here {gap}): "
                f"use scale_bits >= {self.first_mod_bits - correction_factor(self.ring_dim, self.slots)}, or leave "
                "scale_bits unset so that derive picks it",
                scale_bits=self.scale_bits, first_mod_bits=self.first_mod_bits,
            )
        if self.security == INSECURE:
            return self
        if self.security != SECURE:
            raise ParameterError(f"unknown security claim {self.security!r}; use {SECURE!r}")
        bound = MAX_LOG_QP.get(self.ring_dim)
        if bound is None or self.log_qp > bound:
            need = min((n for n, b in MAX_LOG_QP.items() if b >= self.log_qp), default=None)
            raise ParameterError(
                f"ring dimension {self.ring_dim} is below 128-bit security for {self.log_qp} bits of modulus "
                f"(the HE standard allows {bound} bits): use ring_dim >= {need} or a smaller depth",
                ring_dim=self.ring_dim,
                depth=self.depth,
            )
        return self

    def to_json(self) -> dict:
        """A JSON-ready dict (without `digits` and `lifted` at their defaults, so older sets keep their fingerprint)."""
        data = asdict(self)
        for name in ("digits", "lifted"):
            if not data[name]:
                del data[name]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Parameters":
        """Rebuild and validate a parameter set from `to_json`'s dict."""
        try:
            params = cls(**{k: (str(v) if k == "security" else bool(v) if k in ("bootstrap", "lifted") else int(v))
                            for k, v in data.items()})
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"malformed parameter JSON: {exc}") from exc
        return params.validate()

    def fingerprint(self) -> bytes:
        """16 bytes identifying this parameter set (checked before any blob reaches a backend)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).digest()[:16]

    def __str__(self) -> str:
        return (
            f"N={self.ring_dim} slots={self.slots} depth={self.depth} scale=2^{self.scale_bits} "
            f"first_mod={self.first_mod_bits}b log2(QP)~{self.log_qp} security: {self.security}"
            + (f" bootstrapping (+{BOOTSTRAP_CHAIN_LEVELS} levels)" if self.bootstrap else "")
            + (f" key-switching digits {self.digits}" if self.digits else "")
            + (" lifted encryption (+1 level)" if self.lifted else "")
        )
