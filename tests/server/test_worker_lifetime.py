"""A service killed with SIGKILL leaves no worker process behind (workers die with their parent), and a worker
lives as long as its parent process, not as long as the thread that happened to spawn it."""

import os
import signal
import subprocess
import sys
import threading
import time

from server.executor import LocalProcessExecutor

SCRIPT = """
import os, sys, time
from server.executor import LocalProcessExecutor
executor = LocalProcessExecutor(2)
futures = [executor.submit_call(os.getpid) for _ in range(8)]
print(" ".join(sorted({str(f.result()) for f in futures})), flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or gone between the open and the read
        return False


def test_workers_exit_when_the_service_is_killed():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        workers = [int(pid) for pid in proc.stdout.readline().split()]
        assert workers and all(_alive(pid) for pid in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        proc.kill()


def test_workers_outlive_the_thread_that_spawned_them():
    """A job submitted from a short-lived thread (a request thread) must not tie its worker's life to that thread
    (with PR_SET_PDEATHSIG it did: the next job failed as worker_crashed)."""
    executor = LocalProcessExecutor(1)
    try:
        pids = []
        thread = threading.Thread(target=lambda: pids.append(executor.submit_call(os.getpid).result(timeout=60)))
        thread.start()
        thread.join()
        time.sleep(0.5)
        assert pids and executor.submit_call(os.getpid).result(timeout=60) == pids[0]
    finally:
        executor.shutdown()
