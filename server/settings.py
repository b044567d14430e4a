"""Service settings, read from the environment (prefix ``EINFHE_``) by pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_MIB = 1 << 20


class Settings(BaseSettings):
    """Where the service keeps its data, who may call it, and the caps on every request."""

    model_config = SettingsConfigDict(env_prefix="EINFHE_", extra="ignore")

    data_dir: Path = Path("data")
    token_file: Path | None = None
    # Tenants allowed to register and delete models (every tenant may use them); JSON list in the environment.
    operators: list[str] = ["operator"]
    workers: int = Field(2, ge=1, le=256)
    worker_threads: int = Field(1, ge=1, le=256)  # OpenMP threads per worker (OMP_NUM_THREADS wins when set)
    # Where jobs run: local worker processes, or Dask (a scheduler address, or a LocalCluster of `workers`).
    executor: Literal["local", "dask"] = "local"
    # Which queued job a free local worker runs: fair between tenants and sticky to the key set it holds, or in
    # arrival order (the baseline bench/load_bench.py compares with).
    scheduling: Literal["fair", "fifo"] = "fair"
    # How local workers start: forked from a fork server that has imported OpenFHE (a crashed worker is replaced in
    # 30-70 ms), or each a fresh interpreter (0.6-1 s; the start before issue 18, bench/attack_bench.py's
    # baseline).
    worker_start: Literal["forkserver", "spawn"] = "forkserver"
    # Address space of each local worker process (RLIMIT_AS); unset: the machine's memory / (workers + 1), at least
    # what a job with the largest key set and upload admitted needs (server.service.worker_memory_bytes).
    worker_memory_bytes: int | None = Field(None, ge=256 * _MIB)
    # A tenant whose jobs crash `crash_limit` workers within `crash_window_seconds` is refused jobs (429) for
    # `quarantine_seconds`.
    crash_limit: int = Field(3, ge=1)
    crash_window_seconds: float = Field(60.0, gt=0)
    quarantine_seconds: float = Field(60.0, gt=0)
    scheduler: str | None = None
    max_header_bytes: int = Field(16 * 1024, ge=1024)  # request line and headers together
    header_timeout_seconds: float = Field(10.0, gt=0)  # from a connection's first byte to its headers' end
    body_timeout_seconds: float = Field(30.0, gt=0)  # longest silence while a body is being received
    max_json_bytes: int = Field(1 * _MIB, ge=1)
    max_keyset_bytes: int = Field(1024 * _MIB, ge=1)
    max_ciphertext_bytes: int = Field(256 * _MIB, ge=1)
    max_operand_bytes: int = Field(64 * _MIB, ge=1)
    max_model_bytes: int = Field(64 * _MIB, ge=1)
    max_infer_rows: int = Field(1 << 16, ge=1)
    max_iteration_space: int = Field(1 << 26, ge=1)
    max_plan_steps: int = Field(200_000, ge=1)
    max_cts: int = Field(1024, ge=1)
    # Key sets per tenant, and how long one may go unused (no job) before the server deletes it.
    max_keysets_per_tenant: int = Field(8, ge=1)
    keyset_idle_seconds: float = Field(7 * 24 * 3600.0, gt=0)
    # Queued and running jobs keep their input tensors in memory: past this many bytes, new jobs answer 503.
    max_queued_input_bytes: int = Field(2048 * _MIB, ge=1)
    max_wait_seconds: float = Field(30.0, ge=0)
    # Test-only: accept parameter sets marked INSECURE-TEST-ONLY (tiny rings). Never set this in production.
    allow_insecure_test_params: bool = False
