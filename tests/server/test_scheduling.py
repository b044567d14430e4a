"""Scheduling between tenants (issue 18): fair queueing, key-set stickiness within a slack, and quarantine of a
tenant whose jobs crash workers (429 with Retry-After, its queued jobs dropped), while another tenant computes."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_helpers import SLOTS, auth, keyset_body, npy

from server import create_app
from server.executor import LocalProcessExecutor
from server.fair_queue import FairQueue, Work
from server.quarantine import Quarantine


def _work(tenant: str, keyset: str | None = None) -> Work:
    return Work(tenant, keyset, print, ())


def _order(queue: FairQueue, n: int, holding: str | None = None) -> list[str]:
    return [queue.take(holding).tenant for _ in range(n)]


def test_a_tenant_with_many_queued_jobs_alternates_with_one_that_has_few():
    queue = FairQueue()
    for _ in range(10):
        queue.put(_work("flood"))
    queue.put(_work("victim"))
    queue.put(_work("victim"))
    assert _order(queue, 6) == ["flood", "victim", "flood", "victim", "flood", "flood"]


def test_fifo_order_serves_arrivals_in_turn():
    queue = FairQueue("fifo")
    for tenant in ["flood"] * 5 + ["victim"]:
        queue.put(_work(tenant))
    assert _order(queue, 6) == ["flood"] * 5 + ["victim"]


def test_a_tenant_idle_for_a_while_saves_no_credit():
    queue = FairQueue()
    for _ in range(5):
        queue.put(_work("a"))
    assert _order(queue, 5) == ["a"] * 5  # b was idle: a ran alone
    for _ in range(3):
        queue.put(_work("a"))
        queue.put(_work("b"))
    assert _order(queue, 6) == ["b", "a", "b", "a", "b", "a"]  # they alternate: b gets no five-job head start


def test_sticky_within_the_slack_then_fair():
    queue = FairQueue(sticky_slack=1)
    for tenant in ("a", "b", "a", "b", "a", "b"):
        queue.put(_work(tenant, f"keys-{tenant}"))
    # a worker holding b's keys takes b's jobs while b has been served at most one job more than a
    assert _order(queue, 6, holding="keys-b") == ["b", "b", "a", "b", "a", "a"]


def test_cancel_and_close():
    queue = FairQueue()
    works = [queue.put(_work("a")) for _ in range(3)]
    assert queue.cancel("a") == 3 and all(f.cancelled() for f in works)
    taken = []
    taker = threading.Thread(target=lambda: taken.append(queue.take(None)))
    taker.start()  # waits: nothing is queued
    time.sleep(0.1)
    assert taken == [] and queue.close() == []
    taker.join(5)
    assert taken == [None]  # closed: the waiting worker wakes with nothing
    with pytest.raises(RuntimeError):
        queue.put(_work("b"))


def _take_in_thread(queue: FairQueue, holding: str | None, worker: int, taken: dict) -> threading.Thread:
    """Start a worker thread that takes one work from `queue` into taken[worker]."""
    thread = threading.Thread(target=lambda: taken.__setitem__(worker, queue.take(holding, worker)), daemon=True)
    thread.start()
    return thread


def test_a_tenant_on_probation_runs_one_job_at_a_time_on_its_worker_in_the_others_idle_time():
    queue = FairQueue(workers=2, share_seconds=0.2)
    for tenant in ("flood",) * 3 + ("victim",):
        queue.put(_work(tenant))
    queue.restrict("flood", worker=0)  # one of its jobs crashed worker 0
    victim = queue.take(None, 0)
    assert victim.tenant == "victim"  # flood came first, but yields while another tenant has work
    taken: dict = {}
    threads = [_take_in_thread(queue, None, w, taken) for w in (0, 1)]
    time.sleep(0.1)
    assert taken == {}  # the victim's job runs: flood waits
    queue.done(victim)
    finished = time.monotonic()
    threads[0].join(5)
    assert taken[0].tenant == "flood" and time.monotonic() - finished >= 0.15  # after the victim's idle window
    time.sleep(0.3)
    assert 1 not in taken  # never on worker 1, never two at once
    queue.done(taken[0])
    time.sleep(0.3)
    assert 1 not in taken  # worker 1 still may not run it
    queue.close()
    threads[1].join(5)


def test_a_job_goes_to_the_idle_worker_that_holds_its_keys_or_to_one_that_holds_none():
    queue = FairQueue(workers=2)
    taken: dict = {}
    threads = [_take_in_thread(queue, "keys-a", 0, taken), _take_in_thread(queue, None, 1, taken)]
    time.sleep(0.1)  # both wait
    queue.put(_work("a", "keys-a"))
    threads[0].join(5)
    assert taken[0].tenant == "a" and 1 not in taken
    threads[0] = _take_in_thread(queue, "keys-a", 0, taken)
    time.sleep(0.1)
    queue.put(_work("b", "keys-b"))  # keys nobody holds: the worker holding none loads them, a's stay loaded
    threads[1].join(5)
    assert taken[1].tenant == "b" and taken[0].tenant == "a"
    queue.close()
    threads[0].join(5)
    assert taken[0] is None


def test_a_tenant_keeps_a_worker_free_for_another_active_tenant_and_uses_all_alone():
    queue = FairQueue(workers=2, share_seconds=0.2)
    for _ in range(4):
        queue.put(_work("big"))
    first, second = queue.take(None, 0), queue.take(None, 1)
    assert (first.tenant, second.tenant) == ("big", "big")  # alone: every worker
    queue.put(small := _work("small"))
    queue.done(first)
    assert queue.take(None, 0) is small
    queue.done(small)
    taken: dict = {}
    thread = _take_in_thread(queue, None, 0, taken)
    time.sleep(0.1)
    assert taken == {}  # big runs one job (worker 1) while small was active less than share_seconds ago
    thread.join(5)
    assert taken[0].tenant == "big"  # the window passed: big takes the second worker again
    queue.close()


def test_quarantine_after_limit_crashes_in_the_window():
    now = [0.0]
    quarantine = Quarantine(limit=3, window=10, seconds=30, clock=lambda: now[0])
    assert not quarantine.record_crash("x") and not quarantine.record_crash("x")
    now[0] = 11.0  # the first two fall out of the window
    assert not quarantine.record_crash("x") and not quarantine.record_crash("x")
    assert quarantine.retry_after("x") is None
    assert quarantine.record_crash("x")
    assert quarantine.retry_after("x") == pytest.approx(30) and quarantine.retry_after("y") is None
    now[0] = 41.5
    assert quarantine.retry_after("x") is None


class _CrashingFor(LocalProcessExecutor):
    """Worker processes as usual, but every job of `tenant` dies as if its ciphertext crashed OpenFHE."""

    def __init__(self, tenant: str) -> None:
        super().__init__(workers=1)
        self.tenant = tenant

    def submit(self, task) -> Future:
        if task.tenant != self.tenant:
            return super().submit(task)
        future: Future = Future()
        future.set_exception(BrokenProcessPool("the worker process running this job died"))
        return future


def test_a_tenant_whose_jobs_crash_workers_is_quarantined_and_the_other_computes(settings, matvec):
    app = create_app(settings.model_copy(update={"crash_limit": 3}), executor=_CrashingFor("bob"))
    ctx, W, x = matvec["ctx"], matvec["W"], matvec["x"]
    tensor = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, x, matvec["plan"].input_layout(1)))
    octet = {"Content-Type": "application/octet-stream"}
    try:
        with TestClient(app) as http:
            ids = {}
            for tenant in ("alice", "bob"):
                http.headers.update(auth(tenant))
                assert http.put("/operands/W", content=npy(W), headers=octet).status_code == 200
                plan = http.post("/plans", json={"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}],
                                                 "slots": SLOTS, "params": matvec["params"].to_json()}).json()
                keys = http.post("/keysets", content=keyset_body(ctx), headers=octet).json()
                ids[tenant] = {"plan_id": plan["id"], "keyset_id": keys["id"]}
            http.headers.update(auth("bob"))
            for _ in range(3):
                job = http.post("/jobs", content=tensor, headers=octet, params={**ids["bob"], "wait": 5})
                assert job.status_code == 202 and job.json()["error"]["code"] == "worker_crashed", job.text
            refused = http.post("/jobs", content=tensor, headers=octet, params=ids["bob"])
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "tenant_quarantined"
            assert 0 < int(refused.headers["Retry-After"]) <= settings.quarantine_seconds
            http.headers.update(auth("alice"))
            answer = http.post("/jobs", content=tensor, headers=octet, params={**ids["alice"], "wait": 30})
            assert answer.status_code == 200, answer.text
            y = einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, answer.content))
            np.testing.assert_allclose(y, W @ x, atol=1e-6)
    finally:
        app.state.service.close()


def test_a_worker_that_just_finished_keeps_its_tenants_next_job():
    """The tenant's answer goes out before its worker asks for more work; the tenant's next job, submitted in between,
    waits for that worker (which holds its keys) instead of going to the idle one that holds none."""
    queue = FairQueue(workers=2)
    taken: dict = {}
    queue.put(_work("a", "keys-a"))
    first = queue.take("keys-a", 0)
    waiting = _take_in_thread(queue, None, 1, taken)
    time.sleep(0.1)
    queue.done(first, 0, "keys-a")  # worker 0 finished, holding a's keys, and has not called take yet
    queue.put(_work("a", "keys-a"))
    time.sleep(0.2)
    assert taken == {}  # the worker holding none left it
    assert queue.take("keys-a", 0).tenant == "a"
    queue.put(_work("b", "keys-b"))  # keys nobody holds: the idle worker takes them
    waiting.join(5)
    assert taken[1].tenant == "b"
    queue.close()
