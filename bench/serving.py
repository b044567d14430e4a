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
import threading
import time
from pathlib import Path

import httpx
import psutil

__all__ = ["MemorySampler", "einfhe_serve", "peak_rss"]


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


def peak_rss(pid: int) -> int:
    """The process's peak resident set in bytes (VmHWM in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


class MemorySampler:
    """Samples the resident sets of a process and its descendants every `interval` s in a thread: (monotonic time,
    their sum, the process's own, the largest descendant's) per sample (descendants that die are in it until then)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = []
            for process in (self.process, *self.process.children(recursive=True)):
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.NoSuchProcess:
                    sizes.append(0)
            self.samples.append((time.monotonic(), sum(sizes), sizes[0], max(sizes[1:], default=0)))
            self._stop.wait(self.interval)

    def peak(self, since: float = 0.0) -> int:
        """The largest sum sampled at or after `since` (monotonic seconds)."""
        return max((total for when, total, _, _ in self.samples if when >= since), default=0)

    def peak_descendant(self) -> int:
        """The largest resident set any one descendant (a worker) was sampled at."""
        return max((largest for _, _, _, largest in self.samples), default=0)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
