"""Exact numpy slot simulator: float64 vectors, cyclic rotations, level tracking, no encryption at all."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..errors import BackendError, PlanError, SerializationError
from ..plan import chebyshev_levels
from .base import Backend

__all__ = ["SimCiphertext", "SimulatorBackend"]


@dataclass(frozen=True)
class SimCiphertext:
    """A simulated ciphertext: its slot values and the levels it has consumed."""

    values: np.ndarray
    level: int = 0


class SimulatorBackend(Backend):
    """Runs plans on plain float64 vectors with the exact semantics of the CKKS SIMD ops."""

    name = "simulator"

    def __init__(self, slots: int, max_depth: int = 64) -> None:
        self.slots = slots
        self.max_depth = max_depth

    def _check(self, ct) -> SimCiphertext:
        if not isinstance(ct, SimCiphertext) or ct.values.shape != (self.slots,):
            raise BackendError("not a simulator ciphertext of this context", slots=self.slots)
        return ct

    def encrypt(self, values: np.ndarray, level: int = 0) -> SimCiphertext:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.slots,):
            raise BackendError(f"expected {self.slots} slot values, got shape {values.shape}")
        return SimCiphertext(values.copy(), level)

    def decrypt(self, ct) -> np.ndarray:
        return self._check(ct).values.copy()

    def mul_plain(self, ct, values):
        ct = self._check(ct)
        return SimCiphertext(ct.values * values, ct.level)

    def add_plain(self, ct, values):
        ct = self._check(ct)
        return SimCiphertext(ct.values + values, ct.level)

    def mul(self, a, b):
        a, b = self._check(a), self._check(b)
        return SimCiphertext(a.values * b.values, max(a.level, b.level))

    def add(self, a, b):
        a, b = self._check(a), self._check(b)
        return SimCiphertext(a.values + b.values, max(a.level, b.level))

    def sub(self, a, b):
        a, b = self._check(a), self._check(b)
        return SimCiphertext(a.values - b.values, max(a.level, b.level))

    def rotate(self, ct, offset):
        ct = self._check(ct)
        return SimCiphertext(np.roll(ct.values, -int(offset)), ct.level)

    def level_reduce(self, ct):
        return self.rescale(ct)  # the simulator keeps no scale: dropping a level is what its rescale does

    def rotate_hoisted(self, ct, digits, offset):
        if self._check(digits) is not self._check(ct):
            raise BackendError("hoisted digits belong to another ciphertext")
        return self.rotate(ct, offset)

    def rescale(self, ct):
        ct = self._check(ct)
        if ct.level + 1 > self.max_depth:
            raise PlanError(
                f"the program needs more than the {self.max_depth} levels of this context: "
                "create the context for this plan (Context.for_plan) or with a larger depth"
            )
        return SimCiphertext(ct.values, ct.level + 1)

    def chebyshev(self, ct, coeffs, lo, hi):
        ct = self._check(ct)
        series = np.array(coeffs, dtype=np.float64)
        series[0] /= 2
        t = (2 * ct.values - (lo + hi)) / (hi - lo)
        level = ct.level + chebyshev_levels(len(coeffs) - 1, lo, hi)
        if level > self.max_depth:
            raise PlanError(f"the program needs more than the {self.max_depth} levels of this context")
        return SimCiphertext(np.polynomial.chebyshev.chebval(t, series), level)

    def bootstrap(self, ct):
        return SimCiphertext(self._check(ct).values, 0)

    def level(self, ct) -> int:
        return self._check(ct).level

    def serialize_ciphertext(self, ct) -> bytes:
        ct = self._check(ct)
        buffer = io.BytesIO()
        np.save(buffer, ct.values, allow_pickle=False)
        return int(ct.level).to_bytes(2, "little") + buffer.getvalue()

    def deserialize_ciphertext(self, data: bytes, *, for_arithmetic: bool = True) -> SimCiphertext:
        try:
            values = np.load(io.BytesIO(data[2:]), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise SerializationError(f"not a simulator ciphertext: {exc}") from exc
        if values.dtype != np.float64 or values.shape != (self.slots,):
            raise SerializationError("simulator ciphertext of the wrong size", slots=self.slots)
        return SimCiphertext(values, int.from_bytes(data[:2], "little"))
