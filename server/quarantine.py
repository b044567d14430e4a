"""Quarantine for tenants whose jobs crash worker processes.

A worker process that dies takes seconds to replace (a fresh interpreter importing OpenFHE), so a tenant queueing
ciphertexts that crash OpenFHE could keep every worker respawning while other tenants wait (one such flood made
another tenant's einsum take 71 s instead of 0.18 s). After `limit` crashes within `window` seconds, the tenant's
new jobs are refused for `seconds` (429 `tenant_quarantined` with Retry-After) and its queued jobs fail
(`quarantined`), so the flood costs the other tenants at most `limit` respawns.
"""

from __future__ import annotations

import threading
import time
from collections import deque

__all__ = ["Quarantine"]


class Quarantine:
    """Counts each tenant's worker crashes in a sliding window and says who is quarantined, and for how long."""

    def __init__(self, limit: int = 3, window: float = 60.0, seconds: float = 60.0, clock=time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._crashes: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def record_crash(self, tenant: str) -> bool:
        """Count one crash of a job of `tenant`; True when this crash puts the tenant in quarantine."""
        now = self._clock()
        with self._lock:
            crashes = self._crashes.setdefault(tenant, deque())
            crashes.append(now)
            while crashes and crashes[0] <= now - self.window:
                crashes.popleft()
            if len(crashes) < self.limit or self._until.get(tenant, 0.0) > now:
                return False
            self._until[tenant] = now + self.seconds
            crashes.clear()
            return True

    def retry_after(self, tenant: str) -> float | None:
        """Seconds until `tenant` may submit jobs again, or None when it is not quarantined."""
        with self._lock:
            left = self._until.get(tenant, 0.0) - self._clock()
        return left if left > 0 else None
