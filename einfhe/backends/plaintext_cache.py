"""Encoded plaintexts kept per backend: a plan's plain operands are the same from one run to the next (a model's
weights, a registered matrix, a diagonal taken over many column tiles), and encoding one costs ~90% of a plaintext
product (calibrated in `einfhe/data/costs.json`: mul_plain and mul_plain_cached; the cost model prices reuse).

Entries are keyed by a digest of the slot values and the level they are encoded at, evicted least recently used
beyond a byte budget (an encoded plaintext holds one NTT polynomial per tower and its slot values).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from ..plan.cost import PLAINTEXT_CACHE_BYTES as DEFAULT_CACHE_BYTES

__all__ = ["PlaintextCache", "DEFAULT_CACHE_BYTES"]


class PlaintextCache:
    """Least-recently-used encoded plaintexts within `max_bytes` (0 turns the cache off)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.used_bytes = 0
        self._entries: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, values: np.ndarray, level: int, size: int, encode: Callable[[], object]):
        """The plaintext of `values` at `level` (`size` bytes once encoded), from the cache or from `encode()`."""
        if self.max_bytes <= 0 or size > self.max_bytes:
            return encode()
        key = (hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).digest(), values.shape, level)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit[0]
        plain = encode()
        with self._lock:
            if key not in self._entries:
                self._entries[key] = (plain, size)
                self.used_bytes += size
            while self.used_bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.used_bytes -= dropped
        return plain

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self.used_bytes = 0
