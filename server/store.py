"""Storage under one data directory: SQLite for metadata, a directory of blobs for keys, tensors and results.

    <data_dir>/einfhe.sqlite3          keysets, operands, plans, jobs (one row each, owned by a tenant), models
    <data_dir>/blobs/<kind>/<name>     key sets, plaintext operands (.npy), job results
    <data_dir>/blobs/models/<id>/      a registered model: manifest.json, model.npz, its compiled programs

Blobs are written to a temporary name and renamed, so a crash never leaves half a blob under a real name, and a
row is inserted only after its blob; what a crash leaves behind is settled at startup (`server.recovery`).
Every read is scoped to a tenant (another tenant's object is indistinguishable from a missing one), except
models: the operator registers them for every tenant to use.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from .errors import ServiceError

__all__ = ["Store", "BLOB_KINDS", "storage_error"]

BLOB_KINDS = ("keysets", "operands", "inputs", "results", "models")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keysets (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, fingerprint TEXT NOT NULL, params TEXT NOT NULL,
    rotations TEXT NOT NULL, key_tag TEXT NOT NULL, size INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS operands (
    tenant TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL, shape TEXT NOT NULL, dtype TEXT NOT NULL,
    size INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (tenant, name));
CREATE TABLE IF NOT EXISTS plans (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, spec TEXT NOT NULL, operands TEXT NOT NULL, plan TEXT NOT NULL,
    params TEXT NOT NULL, created REAL NOT NULL);
-- jobs.inputs: the byte size of each uploaded tensor (the tensors go to the worker in memory, never to disk)
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, plan_id TEXT NOT NULL, keyset_id TEXT NOT NULL,
    inputs TEXT NOT NULL, plains TEXT NOT NULL, status TEXT NOT NULL, error_code TEXT, error_message TEXT,
    created REAL NOT NULL, finished REAL, seconds REAL, result_size INTEGER);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, summary TEXT NOT NULL, programs TEXT NOT NULL,
    size INTEGER NOT NULL, created REAL NOT NULL);
"""

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_PROBE_BYTES = 1 << 16


def storage_error(exc: OSError | sqlite3.Error, doing: str) -> ServiceError:
    """The service error for a failed write: `storage_full` (507) when the disk or quota is full, else
    `storage_unavailable` (503: read-only, permissions, I/O errors)."""
    if isinstance(exc, OSError):
        full, reason = exc.errno in _FULL, os.strerror(exc.errno) if exc.errno else str(exc)
    else:  # SQLite says "database or disk is full"
        full, reason = "full" in str(exc).lower(), str(exc)
    if full:
        return ServiceError("storage_full", f"the server's storage is full: could not {doing} ({reason})")
    return ServiceError("storage_unavailable", f"the server's storage refused to {doing} ({reason})")


@contextlib.contextmanager
def _storage(doing: str):
    """Turn filesystem and SQLite failures while `doing` into a storage ServiceError."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        raise storage_error(exc, doing) from exc


# tables every tenant may read (models): their rows never change once inserted, only inserted or deleted
_SHARED_TABLES = {"models"}
# `plan` stays plan JSON text
_JSON_COLUMNS = {"params", "rotations", "shape", "operands", "inputs", "plains", "summary", "programs"}


def _decode(row: sqlite3.Row | None) -> dict | None:
    """A row as a dict, its JSON columns parsed."""
    if row is None:
        return None
    return {k: (json.loads(row[k]) if k in _JSON_COLUMNS else row[k]) for k in row.keys()}


class Store:
    """Tenant-scoped metadata in SQLite and blobs in files, under `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._lock = threading.Lock()
        self._shared: dict[tuple, dict] = {}  # decoded rows of the shared tables, by lookup
        with _storage(f"use the data directory {self.data_dir}"):
            for kind in BLOB_KINDS:
                (self.data_dir / "blobs" / kind).mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.data_dir / "einfhe.sqlite3", check_same_thread=False,
                                       isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL: a commit survives a process crash or restart without an fsync each
            # (an fsync per commit cost ~20 ms per request here); only an OS crash may lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        self._probe()

    def _probe(self) -> None:
        """Write, sync and remove a small blob, so that a full or read-only disk is found at start."""
        probe = f".probe-{os.getpid()}"
        path = self.write_blob("inputs", probe, bytes(_PROBE_BYTES), sync=True)
        path.unlink()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- blobs ----------------------------------------------------------------------------------------
    def blob_dir(self, kind: str) -> Path:
        """The directory holding the blobs of `kind`."""
        if kind not in BLOB_KINDS:
            raise ValueError(f"unknown blob kind {kind!r}")
        return self.data_dir / "blobs" / kind

    def blob_path(self, kind: str, name: str) -> Path:
        """Where blob `name` of `kind` lives (names are server-made ids or digests, never client text)."""
        return self.blob_dir(kind) / name

    def write_blob(self, kind: str, name: str, data: bytes, *, sync: bool = False) -> Path:
        """Write a blob atomically (a temporary file renamed) and return its path; a failed write leaves nothing
        behind and raises `storage_full` or `storage_unavailable`. `sync` flushes it to the disk first."""
        path = self.blob_path(kind, name)
        tmp = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with _storage(f"write a {kind} blob of {len(data)} bytes"):
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    view, written = memoryview(data), 0
                    while written < len(view):
                        written += os.write(fd, view[written:])
                    if sync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
        except ServiceError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        return path

    # -- rows -----------------------------------------------------------------------------------------
    def insert(self, table: str, **row) -> dict:
        """Insert (or replace, for operands re-registered by name) one row and return it decoded."""
        row.setdefault("created", time.time())
        encoded = {k: (json.dumps(v) if k in _JSON_COLUMNS else v) for k, v in row.items()}
        columns = ", ".join(encoded)
        marks = ", ".join("?" for _ in encoded)
        verb = "INSERT OR REPLACE" if table == "operands" else "INSERT"
        with self._lock, _storage(f"record a row of {table}"):
            self._db.execute(f"{verb} INTO {table} ({columns}) VALUES ({marks})", tuple(encoded.values()))
            if table in _SHARED_TABLES:
                self._shared.clear()
        return dict(row)

    def get(self, table: str, tenant: str, **key) -> dict | None:
        """The tenant's row of `table` matching `key` (e.g. id=...), or None."""
        where = " AND ".join(f"{k} = ?" for k in key)
        with self._lock:
            row = self._db.execute(
                f"SELECT * FROM {table} WHERE tenant = ? AND {where}", (tenant, *key.values())
            ).fetchone()
        return _decode(row)

    def get_shared(self, table: str, **key) -> dict | None:
        """The row of a table every tenant may read (models) matching `key`, or None. Found rows are kept decoded
        (they never change; an insert or delete in the table forgets them): treat the dict as read-only."""
        where = " AND ".join(f"{k} = ?" for k in key)
        lookup = (table, *sorted(key.items()))
        with self._lock:
            if lookup not in self._shared:
                row = _decode(self._db.execute(f"SELECT * FROM {table} WHERE {where}", tuple(key.values())).fetchone())
                if row is None:
                    return None
                self._shared[lookup] = row
            return self._shared[lookup]

    def list_shared(self, table: str) -> list[dict]:
        """All rows of a table every tenant may read (models), oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM {table} ORDER BY created").fetchall()
        return [_decode(r) for r in rows]

    def list(self, table: str, tenant: str) -> list[dict]:
        """All of the tenant's rows of `table`, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM {table} WHERE tenant = ? ORDER BY created", (tenant,)).fetchall()
        return [_decode(r) for r in rows]

    def delete(self, table: str, tenant: str, **key) -> bool:
        """Delete the tenant's row matching `key`; True when one was deleted."""
        where = " AND ".join(f"{k} = ?" for k in key)
        with self._lock:
            cur = self._db.execute(f"DELETE FROM {table} WHERE tenant = ? AND {where}", (tenant, *key.values()))
            if table in _SHARED_TABLES:
                self._shared.clear()
        return cur.rowcount > 0

    def delete_with_blob(self, table: str, kind: str, tenant: str, object_id: str) -> None:
        """Delete the tenant's row `object_id` of `table`, then its blob of `kind` (the row first: a crash in between
        leaves only a blob without a row, which start-up recovery removes)."""
        self.delete(table, tenant, id=object_id)
        self.blob_path(kind, object_id).unlink(missing_ok=True)

    def idle_keysets(self, tenant: str, idle_since: float) -> list[str]:
        """Ids of the tenant's key sets neither made nor used by a job since `idle_since` (epoch seconds)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT k.id FROM keysets k LEFT JOIN jobs j ON j.keyset_id = k.id WHERE k.tenant = ? "
                "GROUP BY k.id HAVING max(k.created, coalesce(max(j.created), 0)) < ?", (tenant, idle_since)).fetchall()
        return [row[0] for row in rows]

    def finish_job(self, job_id: str, status: str, *, error_code: str | None = None,
                   error_message: str | None = None, seconds: float | None = None,
                   result_size: int | None = None) -> None:
        """Record a job's final state."""
        with self._lock, _storage("record a job's state"):
            self._db.execute(
                "UPDATE jobs SET status = ?, error_code = ?, error_message = ?, seconds = ?, result_size = ?, "
                "finished = ? WHERE id = ?",
                (status, error_code, error_message, seconds, result_size, time.time(), job_id),
            )

    def unfinished_jobs(self) -> list[str]:
        """Ids of the jobs still queued or running (after a restart: the ones the last process left behind)."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')").fetchall()
        return [row["id"] for row in rows]

    def names(self, table: str, column: str) -> set[str]:
        """Every value of `column` in `table`, across tenants (to find blobs no row refers to)."""
        with self._lock:
            return {row[0] for row in self._db.execute(f"SELECT {column} FROM {table}").fetchall()}
