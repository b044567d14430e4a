"""Wall-clock timing of repeated calls, shared by the calibration and the benchmarks."""

from __future__ import annotations

import time

__all__ = ["call_seconds"]


def call_seconds(fn, repeats: int, give_up_after: float | None = None) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls of `fn()`, stopping early after a call slower than
    `give_up_after` seconds (a slow baseline is timed once)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
        if give_up_after is not None and seconds[-1] > give_up_after:
            break
    return seconds
