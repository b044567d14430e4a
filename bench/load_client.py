"""Load on a service: one client per tenant running encrypted einsums back to back for a bounded time, every
answer decrypted and checked against numpy, and the server's own job list compared with what was sent.

    report = run_load(url, tokens, seconds=30)
    report.lost, report.wrong, report.latency(0.95)

Each tenant registers its own random plaintext W (so an answer computed with another tenant's operand or keys
would be caught as wrong), generates its keys and uploads them once (that first call is timed apart), then sends
`ij,j->i` with a fresh random x until the time is up, from `in_flight` lanes at once (a lane sends its next request
when its last is answered). A request is lost when it was sent but never answered
correctly: it raised, it decrypted to the wrong values, or the server holds no succeeded job for it.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from einfhe import Parameters
from einfhe.params.precision import error_bound

from client import Client, PlanInfo

__all__ = ["ClientLoad", "LoadReport", "run_load"]

SPEC = "ij,j->i"


@dataclass
class ClientLoad:
    """What one tenant's client sent and got back."""

    sent: int = 0
    correct: int = 0
    wrong: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds per call after the first (keys uploaded)
    first_call: float = 0.0  # seconds: plan, keygen, key upload and the first einsum
    server_jobs: int = 0  # the tenant's jobs on the server after the run
    server_succeeded: int = 0
    server_seconds: list[float] = field(default_factory=list)  # each succeeded job's time in a worker
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # the counts, from several lanes


@dataclass
class LoadReport:
    """Every client's figures and the run's wall time."""

    clients: list[ClientLoad]
    seconds: float

    @property
    def sent(self) -> int:
        """Requests sent by all clients."""
        return sum(c.sent for c in self.clients)

    @property
    def correct(self) -> int:
        """Requests answered with the right values."""
        return sum(c.correct for c in self.clients)

    @property
    def wrong(self) -> int:
        """Requests answered with wrong values."""
        return sum(c.wrong for c in self.clients)

    @property
    def lost(self) -> int:
        """Requests sent but not answered correctly, or missing from the server's succeeded jobs."""
        missing = sum(max(0, c.sent - c.server_succeeded) for c in self.clients)
        return max(self.sent - self.correct, missing)

    def latency(self, quantile: float) -> float:
        """The `quantile` of all clients' per-call latencies (seconds; the first calls excluded)."""
        return float(np.quantile(np.concatenate([c.latencies for c in self.clients]), quantile))


class _Window:
    """The timed window every client enters together once all have uploaded their keys."""

    def __init__(self, clients: int, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = 0.0
        self._barrier = threading.Barrier(clients, action=self._open)

    def _open(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def enter(self) -> float:
        """Wait for every client, then return the window's deadline."""
        self._barrier.wait()
        return self.deadline


def _call(einsum, plan: PlanInfo, W: np.ndarray, x: np.ndarray, load: ClientLoad) -> float:
    """One `einsum(x)`, its answer checked against W @ x within the plan's error bound; returns its seconds."""
    with load.lock:
        load.sent += 1
    start = time.perf_counter()
    try:
        y = einsum(x)
    except Exception as exc:  # counted as lost, and reported
        load.errors.append(f"{type(exc).__name__}: {exc}")
        return time.perf_counter() - start
    elapsed = time.perf_counter() - start
    atol = error_bound(plan.params, float(np.abs(W).max() * np.abs(x).max()), W.shape[1], plan.plan.depth,
                       plan.plan.keyswitches)
    right = np.allclose(y, W @ x, rtol=0, atol=atol)
    with load.lock:
        load.correct += right
        load.wrong += not right
    return elapsed


def _one_client(url: str, token: str, seed: int, window: _Window, shape: tuple[int, int], slots: int,
                params: Parameters | None, in_flight: int) -> ClientLoad:
    """Register W and make the first call (keys uploaded), then run einsums until the window closes, `in_flight`
    at a time (each lane sends its next one when its last is answered)."""
    load = ClientLoad()
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(shape)
    with Client(url, token, progress=False) as client:

        def einsum(x: np.ndarray) -> np.ndarray:
            return client.einsum(SPEC, "W", x, slots=slots, params=params)

        try:
            client.register_operand("W", W)
            plan = client.plan(SPEC, "W", np.empty(shape[1]), slots=slots, params=params)
            load.first_call = _call(einsum, plan, W, rng.standard_normal(shape[1]), load)
        finally:
            deadline = window.enter()

        def lane(lane_seed: int) -> None:
            lane_rng = np.random.default_rng([seed, lane_seed])
            while time.monotonic() < deadline:
                load.latencies.append(_call(einsum, plan, W, lane_rng.standard_normal(shape[1]), load))

        lanes = [threading.Thread(target=lane, args=(i,)) for i in range(in_flight)]
        for thread in lanes:
            thread.start()
        for thread in lanes:
            thread.join()
        jobs = client.http.request("GET", "/jobs").json()
    load.server_jobs = len(jobs)
    load.server_seconds = [job["seconds"] for job in jobs if job["status"] == "succeeded"]
    load.server_succeeded = len(load.server_seconds)
    return load


def run_load(url: str, tokens: list[str], *, seconds: float, shape: tuple[int, int] = (64, 128), slots: int = 8192,
             params: Parameters | None = None, in_flight: int = 1) -> LoadReport:
    """One concurrent client per token (each a tenant with no jobs yet), all sending for `seconds` once every
    client has made its first call, each with `in_flight` requests outstanding; the report's `seconds` is the
    window's wall time."""
    window = _Window(len(tokens), seconds)
    with ThreadPoolExecutor(len(tokens)) as pool:
        futures = [pool.submit(_one_client, url, token, seed, window, shape, slots, params, in_flight)
                   for seed, token in enumerate(tokens)]
        clients = [f.result() for f in futures]
    return LoadReport(clients, time.monotonic() - window.deadline + seconds)
