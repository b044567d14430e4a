"""How worker processes start: their fork server, and how a start can fail (most likely a script that starts the
service at import time).

CPython 3.10's fork server ignores its parent's sys.path and imports the worker's modules from its own default one,
so a process that put another checkout of einfhe first on sys.path (a notebook does) would fork workers running the
installed code; `start_fork_server` starts it on the parent's sys.path instead.

Worker processes (forked from the fork server, or spawned) import the script that started the service as
`__mp_main__` while they bootstrap, so a script that starts the service outside `if __name__ == "__main__":` would
start it again in every worker. `refuse_start_in_bootstrapping_worker` stops that nested start at once, the worker
exits before it is ready, and the service answers `worker_start_failed` (503) instead of blaming the job: a worker
tells its parent it is ready once it has bootstrapped (`signal_ready`), and `await_ready` tells a worker that
exited before that from one that crashed during a job.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing import forkserver

from .errors import ServiceError

__all__ = ["WorkerStartFailed", "await_ready", "refuse_start_in_bootstrapping_worker", "signal_ready",
           "start_fork_server"]

_READY = "ready"
_EXIT_SECONDS = 5.0
_GUARD = ('worker processes import the main module while they start, so a script that starts the einfhe service '
          '(LocalServer, create_app, LocalProcessExecutor) must do so under `if __name__ == "__main__":`')


class WorkerStartFailed(ServiceError):
    """A worker process could not start (code worker_start_failed, HTTP 503): no job or key set is at fault."""

    def __init__(self, message: str) -> None:
        super().__init__("worker_start_failed", message)


def refuse_start_in_bootstrapping_worker(what: str) -> None:
    """Raise WorkerStartFailed when this process is a worker still importing the main module (starting `what` here
    would start a service inside each of the service's own workers)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # CPython's own test (spawn.py)
        raise WorkerStartFailed(f"{what} refused to start inside a worker process: {_GUARD}")


def signal_ready(conn) -> None:
    """In a worker: tell the parent on `conn` that this process has bootstrapped and takes work."""
    conn.send(_READY)


def await_ready(conn, process) -> None:
    """Wait until the worker `process` says on `conn` that it is ready; WorkerStartFailed, naming its exit code,
    when it exits first."""
    try:
        conn.recv()
    except (EOFError, OSError) as exc:
        process.join(timeout=_EXIT_SECONDS)
        raise WorkerStartFailed(f"a worker process exited (exit code {process.exitcode}) while starting, before it "
                                f"could take any work. The likely cause: {_GUARD}") from exc


def start_fork_server() -> None:
    """Start this process's fork server, unless it runs already, with this process's sys.path ahead of its own."""
    saved = os.environ.get("PYTHONPATH")
    path = [os.path.abspath(entry) for entry in sys.path if os.pathsep not in entry]
    os.environ["PYTHONPATH"] = os.pathsep.join(path + ([saved] if saved else []))
    try:
        forkserver.ensure_running()  # the fork server takes this environment when it starts, not after
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
