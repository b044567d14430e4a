"""Run a plan's steps, its independent ones on a small thread pool.

A plan is straight-line SSA code, so a step can start as soon as its inputs exist (with one worker every step
runs on the calling thread, in plan order). openfhe-python releases the
GIL inside its C++ operations (rotations, products, rescales, key-switch precomputation; plaintext encoding
mostly), so `workers` Python threads work on that many independent ciphertexts at once. Cheap steps (loads,
additions, subtractions: tens of microseconds) run on the dispatching thread, where handing them to a worker
would cost more than they do. Use it with OpenFHE's own OpenMP threading off (OMP_NUM_THREADS=1): both at
once oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..errors import PlanError

__all__ = ["run_steps", "default_workers", "INLINE_OPS"]

INLINE_OPS = frozenset({"load", "add", "sub"})


def _timed(apply, step, args):
    start = time.perf_counter()
    result = apply(step, args)
    return result, time.perf_counter() - start


def run_steps(steps, apply, prepare, workers: int, keep, stats) -> dict:
    """Run `steps` (plan order) with `workers` threads; `prepare(step)` (on this thread) returns the extra
    argument `apply(step, (values, extra))` needs; values used by no later step and not in `keep` are dropped.
    Return the values of `keep`. With one worker, every step runs here: the ready step of the lowest position
    first is then exactly plan order."""
    consumers: dict[int, list[int]] = {}
    waiting = []
    for position, step in enumerate(steps):
        args = set(step.args)
        waiting.append(len(args))
        for arg in args:
            consumers.setdefault(arg, []).append(position)
    uses = {value: len(positions) for value, positions in consumers.items()}
    live: dict[int, object] = {}
    ready = [p for p, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    running: dict = {}

    def finish(position: int, result, seconds: float) -> None:
        step = steps[position]
        stats.seconds[step.op] += seconds
        stats.counts[step.op] += 1
        live[step.out] = result
        for consumer in consumers.get(step.out, ()):
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                heapq.heappush(ready, consumer)
        for arg in set(step.args):
            uses[arg] -= 1
            if uses[arg] == 0 and arg not in keep:
                live.pop(arg, None)

    pool = (ThreadPoolExecutor(max_workers=workers, thread_name_prefix="einfhe-step") if workers > 1
            else contextlib.nullcontext())
    with pool:
        try:
            while ready or running:
                while ready:
                    position = heapq.heappop(ready)
                    step = steps[position]
                    args = (tuple(live[a] for a in step.args), prepare(step))
                    if workers == 1 or step.op in INLINE_OPS:
                        finish(position, *_timed(apply, step, args))
                    else:
                        running[pool.submit(_timed, apply, step, args)] = position
                if running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in sorted(done, key=running.get):
                        finish(running.pop(future), *future.result())
        finally:
            for future in running:
                future.cancel()
    return {value: live[value] for value in keep}


def default_workers(plan) -> int:
    """Threads a run of `plan` uses unless told: EINFHE_WORKERS when set; else 2 when OpenFHE's OpenMP is off
    (OMP_NUM_THREADS=1), a core is idle (1-minute load average at most cores - 0.5) and the plan's critical path
    is at most half its estimated time; else 1. Measured (BENCHMARKS.md, einsum strategies): 2 threads ran wide plans
    1.4-1.8x faster at load ~1 on 2 cores, and 0.86-1.36x at load 3.7-5.5; narrow plans gained nothing."""
    value = os.environ.get("EINFHE_WORKERS", "").strip()
    if value:
        try:
            workers = int(value)
        except ValueError:
            workers = 0
        if workers < 1:
            raise PlanError(f"EINFHE_WORKERS must be a positive integer, got {value!r}")
        return workers
    cores = len(os.sched_getaffinity(0))
    if os.environ.get("OMP_NUM_THREADS", "").strip() != "1" or cores < 2 or os.getloadavg()[0] > cores - 0.5:
        return 1
    from ..plan.cost import critical_path

    total, critical = critical_path(plan)
    return 2 if 0 < critical <= total / 2 else 1
