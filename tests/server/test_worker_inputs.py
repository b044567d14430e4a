"""A job's inputs reach its worker process intact: through the shared buffer when they fit, through the pipe when
they do not or when there is no buffer, one job after another (nothing of an earlier job's inputs shows through)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from server.executor import LocalProcessExecutor
from server.job_messages import JobTask

pytestmark = pytest.mark.timeout(120)


def input_digests(task: JobTask) -> list[str]:
    """In a worker: the SHA-256 of each input the task arrived with."""
    return [hashlib.sha256(blob).hexdigest() for blob in task.inputs]


@pytest.mark.parametrize("arena_bytes", [64 << 20, 1 << 20, 0])
def test_inputs_arrive_intact_through_the_buffer_or_the_pipe(arena_bytes):
    executor = LocalProcessExecutor(1, arena_bytes=arena_bytes)
    rng = np.random.default_rng(0)
    try:
        for sizes in ([3, 500_000], [700_000, 600_000], [5], [], [1 << 20]):  # 1.3 MiB: past a 1 MiB buffer
            inputs = tuple(rng.bytes(n) for n in sizes)
            task = JobTask("job", "keys", "keys.bin", {}, "{}", inputs, (), 1)
            got = executor.submit_call(input_digests, task).result(timeout=60)
            assert got == [hashlib.sha256(blob).hexdigest() for blob in inputs], sizes
    finally:
        executor.shutdown()
