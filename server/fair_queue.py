"""Which job a worker runs next: fair between tenants, and sticky to the key set the worker already holds.

Start-time fair queueing over job counts (the per-tenant flavour of Goyal, Vin and Cheng's SFQ, SIGCOMM 1996):
each tenant has a count of the jobs it was served; a free worker serves a tenant among those with work queued whose
count is lowest, so a tenant with a thousand queued jobs and one with one job alternate. A tenant that comes back
after being idle starts at the count of the tenant served last (no credit saved up while idle). Stickiness: when the
worker holds a key set that a queued job uses, it takes that job if its tenant is within `sticky_slack` jobs of
the lowest count, which saves the worker a key-set load (tens of ms to seconds) without letting one tenant run
ahead by more than the slack. Within a tenant, jobs run in arrival order (except for that sticky pick).

Placement: a job whose key set an idle worker holds goes to that worker rather than to another idle one, which
would load the keys again (at ring 2^14, loading a key set takes several times as long as a small einsum); a job
that needs keys no idle worker holds goes to an idle worker that holds none, if there is one, so the keys loaded
elsewhere stay for their tenant's next job.

Sharing: with more than one worker, a tenant runs at most `workers - 1` jobs at once while another tenant has work
queued or running or had some within the last `share_seconds`, so one tenant's burst never holds every worker
from a tenant between two requests; alone, a tenant uses every worker.

Probation: a tenant one of whose jobs just crashed a worker (`restrict`) runs, for `probation_seconds`, at most one
job at a time (the crashed worker's restart counted as its job), only on the worker it crashed, and only when no
other tenant has work queued or running or had some within `share_seconds`: a flood of crashing jobs takes down
that one worker, in the other tenants' idle time, while they run on the rest with their keys loaded.

`order="fifo"` serves jobs in arrival order whatever their tenant, with none of the placement, sharing and probation
rules above (the scheduling before issue 18, kept as the baseline bench/load_bench.py and bench/attack_bench.py
measure against).
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
                 probation_seconds: float = 60.0, workers: int = 1, share_seconds: float = 1.0) -> None:
        self.order = order
        self.sticky_slack = sticky_slack
        self.probation_seconds = probation_seconds
        self.workers = workers
        self.share_seconds = share_seconds
        self._running: dict[str, int] = {}  # works taken and not yet done, by tenant
        self._last_active: dict[str, float] = {}  # tenant -> monotonic time it last queued or finished work
        self._probation: dict[str, float] = {}  # tenant -> monotonic time its probation ends
        self._pinned: dict[str, int] = {}  # tenant on probation -> the worker it may run on
        self._idle: dict[int, str | None] = {}  # worker waiting in take -> the key set it holds
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
            self._last_active[work.tenant] = time.monotonic()
            if not self._queues.get(work.tenant):  # back from idle: no credit for the idle time
                self._served[work.tenant] = max(self._served.get(work.tenant, 0), self._clock)
            self._queues.setdefault(work.tenant, deque()).append(work)
            self._ready.notify_all()  # every idle worker: the one holding its key set should take it
        return work.future

    def take(self, holding: str | None, worker: int = 0) -> Work | None:
        """The next work for worker `worker`, which holds key set `holding` (blocks until there is some); None once
        closed."""
        with self._ready:
            self._idle[worker] = holding
            try:
                while True:
                    if self._closed:
                        return None
                    work = self._pick(holding, worker)
                    if work is None:  # a sharing window or a probation may end without a notify: look again soon
                        self._ready.wait(self.share_seconds if any(self._queues.values()) else None)
                        continue
                    if work.future.set_running_or_notify_cancel():
                        if any(self._queues.values()):  # an idle worker that left a job to this one looks again
                            self._ready.notify_all()
                        return work
                    self._running[work.tenant] -= 1  # cancelled while queued
            finally:
                del self._idle[worker]

    def _may_run(self, tenant: str, worker: int, now: float) -> bool:
        """Whether worker `worker` may start another job of `tenant` now (probation and sharing; under the lock)."""
        running = self._running.get(tenant, 0)
        on_probation = self._probation.get(tenant, 0.0) > now
        if on_probation and (running or self._pinned.get(tenant, worker) != worker):
            return False
        if not on_probation and (self.workers < 2 or running < self.workers - 1):
            return True
        return not any(other != tenant and (self._running.get(other) or self._queues.get(other)
                                            or self._last_active.get(other, -1e18) > now - self.share_seconds)
                       for other in self._last_active)

    def _better_elsewhere(self, work: Work, holding: str | None, worker: int) -> bool:
        """Whether another idle worker should take `work` rather than this one, which holds `holding`: one that
        holds the work's key set, or, when the work needs other keys than this worker's, one that holds none (so
        the keys loaded here stay for their tenant's next job). Under the lock."""
        if not (work.clears_keys or work.keyset_id not in (None, holding)):
            return False  # runs here without loading keys
        others = {keys for other, keys in self._idle.items() if other != worker}
        return (work.keyset_id is not None and work.keyset_id in others) or (holding is not None and None in others)

    def _pick(self, holding: str | None, worker: int) -> Work | None:
        """Remove and return the work to serve next (under the lock), or None when nothing is queued that this
        worker should take."""
        if self.order == "fifo":  # arrival order, no placement, sharing or probation: the scheduling before issue 18
            heads = [queue[0] for queue in self._queues.values() if queue]
            work = min(heads, key=lambda w: w.sequence, default=None)
            return work and self._serve(work.tenant, work)
        now = time.monotonic()
        busy = {tenant: queue for tenant, queue in self._queues.items()
                if queue and self._may_run(tenant, worker, now)
                and (self._probation.get(tenant, 0.0) > now or not self._better_elsewhere(queue[0], holding, worker))}
        if not busy:
            return None
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

    def done(self, work: Work, worker: int | None = None, holding: str | None = None) -> None:
        """A taken work has finished: its tenant may run another if probation held it back. Given the worker that
        ran it and the key set that worker now holds, the worker counts as idle with those keys at once, before it
        asks for more work: a job of that key set submitted in between (its tenant answered already) waits for it
        instead of going to another idle worker that would load the keys again."""
        with self._ready:
            self._running[work.tenant] -= 1
            self._last_active[work.tenant] = time.monotonic()
            if worker is not None:
                self._idle[worker] = holding
            self._ready.notify_all()

    def restrict(self, tenant: str, worker: int = 0) -> None:
        """Put `tenant` on probation (one job at a time, on worker `worker` only, for probation_seconds): a job of it
        crashed that worker."""
        with self._ready:
            self._probation[tenant] = time.monotonic() + self.probation_seconds
            self._pinned[tenant] = worker

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
