"""Which job a worker runs next: fair between tenants, and sticky to the key set the worker already holds.

Start-time fair queueing over job counts (the per-tenant flavour of Goyal, Vin and Cheng's SFQ, SIGCOMM 1996):
each tenant has a count of the jobs it was served; a free worker serves a tenant among those with work queued whose
count is lowest, so a tenant with a thousand queued jobs and one with one job alternate. A tenant that comes back
after being idle starts at the count of the tenant served last (no credit saved up while idle). Stickiness: when the
worker holds a key set that a queued job uses, it takes that job if its tenant is within `sticky_slack` jobs of
the lowest count, which saves the worker a key-set load (tens of ms to seconds) without letting one tenant run
ahead by more than the slack. Within a tenant, jobs run in arrival order (except for that sticky pick).

Probation: a tenant one of whose jobs just crashed a worker (`restrict`) runs at most one job at a time for
`probation_seconds`, counting the crashed worker's restart as its job, so a flood of crashing jobs takes down
one worker at a time, never all of them, while the other tenants run on the rest.

`order="fifo"` serves jobs in arrival order whatever their tenant (the scheduling before issue 18, kept as the
baseline bench/load_bench.py measures against).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Literal

__all__ = ["FairQueue", "Work"]


@dataclass
class Work:
    """One call `fn(*args)` waiting for a worker: whose it is, the key set it runs with (None: none), whether it
    leaves the worker without keys (a key-set check), and its future."""

    tenant: str
    keyset_id: str | None
    fn: Callable[..., object]
    args: tuple
    clears_keys: bool = False
    future: Future = field(default_factory=Future)
    sequence: int = 0


class FairQueue:
    """Per-tenant queues that workers take from (blocking), fairly and key-set-sticky; see the module docstring."""

    def __init__(self, order: Literal["fair", "fifo"] = "fair", sticky_slack: int = 1,
                 probation_seconds: float = 60.0) -> None:
        self.order = order
        self.sticky_slack = sticky_slack
        self.probation_seconds = probation_seconds
        self._running: dict[str, int] = {}  # works taken and not yet done, by tenant
        self._probation: dict[str, float] = {}  # tenant -> monotonic time its probation ends
        self._queues: dict[str, deque[Work]] = {}
        self._served: dict[str, int] = {}
        self._sequence = itertools.count()
        self._clock = 0  # SFQ's virtual time: the count of the tenant served last, when it was served
        self._ready = threading.Condition()
        self._closed = False

    def put(self, work: Work) -> Future:
        """Queue `work` behind its tenant's earlier jobs; its future."""
        with self._ready:
            if self._closed:
                raise RuntimeError("the queue is closed")
            work.sequence = next(self._sequence)
            if not self._queues.get(work.tenant):  # back from idle: no credit for the idle time
                self._served[work.tenant] = max(self._served.get(work.tenant, 0), self._clock)
            self._queues.setdefault(work.tenant, deque()).append(work)
            self._ready.notify()
        return work.future

    def take(self, holding: str | None) -> Work | None:
        """The next work for a worker holding key set `holding` (blocks until there is some); None once closed."""
        with self._ready:
            while True:
                if self._closed:
                    return None
                work = self._pick(holding)
                if work is None:
                    self._ready.wait()
                    continue
                if work.future.set_running_or_notify_cancel():
                    return work

    def _pick(self, holding: str | None) -> Work | None:
        """Remove and return the work to serve next (under the lock), or None when nothing is queued."""
        now = time.monotonic()
        busy = {tenant: queue for tenant, queue in self._queues.items()
                if queue and not (self._probation.get(tenant, 0.0) > now and self._running.get(tenant, 0) >= 1)}
        if not busy:
            return None
        if self.order == "fifo":
            tenant = min(busy, key=lambda t: busy[t][0].sequence)
            return self._serve(tenant, busy[tenant][0])
        lowest = min(self._served[t] for t in busy)
        if holding is not None:
            near = [t for t in busy if self._served[t] <= lowest + self.sticky_slack]
            sticky = [w for t in near for w in busy[t] if w.keyset_id == holding]
            if sticky:
                work = min(sticky, key=lambda w: w.sequence)
                return self._serve(work.tenant, work)
        tenant = min((t for t in busy if self._served[t] == lowest), key=lambda t: busy[t][0].sequence)
        return self._serve(tenant, busy[tenant][0])

    def _serve(self, tenant: str, work: Work) -> Work:
        self._queues[tenant].remove(work)
        self._clock = self._served[tenant]
        self._served[tenant] += 1
        self._running[tenant] = self._running.get(tenant, 0) + 1
        return work

    def done(self, work: Work) -> None:
        """A taken work has finished: its tenant may run another if probation held it back."""
        with self._ready:
            self._running[work.tenant] -= 1
            self._ready.notify()

    def restrict(self, tenant: str) -> None:
        """Put `tenant` on probation (one job at a time for probation_seconds): a job of it crashed a worker."""
        with self._ready:
            self._probation[tenant] = time.monotonic() + self.probation_seconds

    def cancel(self, tenant: str) -> int:
        """Cancel every queued work of `tenant` (their futures raise CancelledError); how many."""
        with self._ready:
            queue = self._queues.pop(tenant, deque())
        for work in queue:
            work.future.cancel()
        return len(queue)

    def close(self) -> list[Work]:
        """Wake every waiting worker with None and return what was still queued (its futures not yet cancelled)."""
        with self._ready:
            self._closed = True
            left = [w for q in self._queues.values() for w in q]
            self._queues.clear()
            self._ready.notify_all()
        return left
