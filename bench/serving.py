"""`einfhe serve` in a subprocess, for the benchmarks: the server in a process of its own, as it is deployed.

A client never shares the server's interpreter; running uvicorn in a thread of the benchmark's own process would
make the client and the server take turns on one GIL, which a deployment does not pay.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["einfhe_serve"]


@contextlib.contextmanager
def einfhe_serve(data_dir: Path, token_file: Path, workers: int = 2, timeout: float = 60.0, env: dict | None = None):
    """Run `python -m server.cli` on a free loopback port (with `env` added to the environment, e.g. EINFHE_ settings);
    yield (process, url) once it answers; stop it after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "server.cli", "--port", str(port), "--data-dir", str(data_dir),
               "--token-file", str(token_file), "--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{url}/keysets", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("einfhe serve did not start") from None
                time.sleep(0.1)
        yield process, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
