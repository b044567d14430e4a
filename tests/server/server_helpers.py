"""Helpers for service tests: test tenants, auth headers, .npy and evaluation-key bodies, `einfhe serve` processes."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from einfhe.serialize import pack_blob, pack_parts

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
SLOTS = 32


def auth(tenant: str) -> dict:
    """Authorization header for a test tenant."""
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


def npy(array) -> bytes:
    """An array as .npy bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def keyset_body(ctx, **replaced_parts) -> bytes:
    """An evaluation-key upload for a context, built like einfhe.evaluation_keys_to_bytes, with parts replaced."""
    parts = {**ctx.backend.export_evaluation_keys(), **replaced_parts}
    meta = {"params": ctx.params.to_json(), "rotations": list(ctx.rotations), "parts": list(parts)}
    return pack_blob("evaluation_keys", ctx.params.fingerprint(), pack_parts(meta, list(parts.values())))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, data_dir: Path, token_file: Path, *args: str, env: dict | None = None):
    """The command line and environment of `python -m server.cli` (what `einfhe serve` runs) for this tree."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **(env or {})}
    command = [sys.executable, "-m", "server.cli", "--port", str(port), "--data-dir", str(data_dir),
               "--token-file", str(token_file), *args]
    return command, env


def start_server(port: int, data_dir: Path, token_file: Path, *args: str, env: dict | None = None,
                 output=subprocess.PIPE, timeout: float = 30) -> subprocess.Popen:
    """`python -m server.cli` as a subprocess, returned once it answers requests."""
    command, env = serve_command(port, data_dir, token_file, *args, env=env)
    process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/keysets", timeout=1)
            return process
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                output_text = process.communicate()[0] if output is subprocess.PIPE else ""
                raise RuntimeError(f"einfhe serve did not start: {output_text}")
            time.sleep(0.1)
