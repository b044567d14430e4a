"""The service object the routes share: settings, tenants, storage, executor and job runner."""

from __future__ import annotations

import logging
import os

from einfhe import ParameterError, Parameters

from .errors import ServiceError
from .executor import Executor, LocalProcessExecutor
from .jobs import JobRunner
from .quarantine import Quarantine
from .recovery import recover
from .settings import Settings
from .store import Store
from .tokens import load_tokens

__all__ = ["Service", "worker_memory_bytes"]

log = logging.getLogger("einfhe.server")


def _make_executor(settings: Settings) -> Executor:
    """The executor the settings ask for (Dask only imported when chosen: it is an optional extra)."""
    if settings.executor == "dask":
        from .dask_executor import DaskExecutor

        return DaskExecutor(settings.scheduler, workers=settings.workers, threads=settings.worker_threads)
    return LocalProcessExecutor(settings.workers, settings.worker_threads, order=settings.scheduling,
                                start=settings.worker_start, memory_bytes=worker_memory_bytes(settings))


def worker_memory_bytes(settings: Settings) -> int:
    """Each local worker's address-space cap: `worker_memory_bytes` when set, else the machine's memory / (workers +
    1), but never below what the largest job this server admits may take in a worker: 4x the largest key set (its
    bytes read, the keys loaded and the plan's plaintexts: a 273 MiB key set at ring 2^16 peaked at 3.6x), 2x the
    largest upload, and 512 MiB for the process itself."""
    if settings.worker_memory_bytes:
        return settings.worker_memory_bytes
    largest_job = 4 * settings.max_keyset_bytes + 2 * settings.max_ciphertext_bytes + (512 << 20)
    return max(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (settings.workers + 1), largest_job)


class Service:
    """Everything a request handler needs; made once per app, closed at shutdown."""

    def __init__(self, settings: Settings, executor: Executor | None = None) -> None:
        self.settings = settings
        self.store = Store(settings.data_dir)  # first: an unusable data directory is the one error at start
        recover(self.store)
        self.tenants = load_tokens(settings.token_file)
        if not self.tenants:
            log.warning("no API tokens configured (token file %s): every request will be refused",
                        settings.token_file)
        if settings.allow_insecure_test_params:
            log.warning("EINFHE_ALLOW_INSECURE_TEST_PARAMS is set: INSECURE test-only CKKS parameters are accepted. "
                        "Never run a real service like this.")
        self.executor = executor or _make_executor(settings)
        self.quarantine = Quarantine(settings.crash_limit, settings.crash_window_seconds, settings.quarantine_seconds)
        self.jobs = JobRunner(self.store, self.executor, settings.max_queued_input_bytes, self.quarantine)

    def parameters(self, data: dict) -> Parameters:
        """Validate a parameter set from a request, refusing insecure ones unless the test-only setting allows."""
        try:
            params = Parameters.from_json(data)
        except ParameterError as exc:
            raise ServiceError("invalid_parameters", exc.message) from exc
        if not params.secure:
            if not self.settings.allow_insecure_test_params:
                raise ServiceError(
                    "insecure_parameters",
                    f"parameters marked {params.security!r} are below 128-bit security and refused: "
                    "derive parameters with einfhe.Parameters.derive or let the server choose",
                )
            log.warning("accepting INSECURE test-only parameters %s", params)
        return params

    def close(self) -> None:
        """Stop the executor (queued jobs are marked interrupted) and close storage."""
        self.executor.shutdown()
        self.store.close()
