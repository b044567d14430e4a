"""The interface every backend implements: encrypt/decrypt packed slot vectors and the SIMD ops of a plan."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["Backend"]


class Backend(ABC):
    """A CKKS-like machine over vectors of `slots` slots; plaintext operands arrive as numpy vectors."""

    name: str = "abstract"
    slots: int
    max_depth: int

    @abstractmethod
    def encrypt(self, values: np.ndarray, level: int = 0):
        """Encrypt one vector of `slots` real values, at `level` levels below the top of the modulus chain."""

    @abstractmethod
    def decrypt(self, ct) -> np.ndarray:
        """Decrypt one ciphertext into its `slots` real values."""

    @abstractmethod
    def mul_plain(self, ct, values: np.ndarray):
        """Multiply slot-wise by a plaintext vector encoded at the ciphertext's level."""

    @abstractmethod
    def add_plain(self, ct, values: np.ndarray):
        """Add a plaintext vector slot-wise, encoded at the ciphertext's level."""

    @abstractmethod
    def mul(self, a, b):
        """Multiply two ciphertexts slot-wise and relinearize."""

    @abstractmethod
    def add(self, a, b):
        """Add two ciphertexts slot-wise."""

    @abstractmethod
    def sub(self, a, b):
        """Subtract two ciphertexts slot-wise (a - b)."""

    @abstractmethod
    def rotate(self, ct, offset: int):
        """Rotate the slots left by `offset` (out[t] = in[(t + offset) % slots])."""

    def level_reduce(self, ct):
        """Drop one level without changing the scale (by default: a product with ones, then a rescale)."""
        return self.rescale(self.mul_plain(ct, np.ones(self.slots)))

    def precompute_rotations(self, ct):
        """Digits of `ct` that several `rotate_hoisted` calls on it share (a backend without hoisting keeps `ct`)."""
        return ct

    def rotate_hoisted(self, ct, digits, offset: int):
        """Rotate `ct` left by `offset` using its precomputed `digits` (by default, a plain rotation)."""
        return self.rotate(ct, offset)

    @abstractmethod
    def rescale(self, ct):
        """Drop one level after a product."""

    @abstractmethod
    def chebyshev(self, ct, coeffs: tuple, lo: float, hi: float):
        """Evaluate c0/2 + sum_k c_k T_k((2x - lo - hi) / (hi - lo)) slot-wise."""

    @abstractmethod
    def bootstrap(self, ct):
        """Refresh a ciphertext to a full level budget."""

    @abstractmethod
    def level(self, ct) -> int:
        """Levels the ciphertext has consumed."""

    @abstractmethod
    def serialize_ciphertext(self, ct) -> bytes:
        """The ciphertext as bytes (without einfhe's header)."""

    @abstractmethod
    def deserialize_ciphertext(self, data: bytes, *, for_arithmetic: bool = True):
        """A ciphertext from `serialize_ciphertext`'s bytes (`for_arithmetic=False`: it will only be decrypted)."""
