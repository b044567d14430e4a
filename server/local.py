"""Run the service in this process on a loopback port (for tests, benchmarks and demos).

    if __name__ == "__main__":  # worker processes import the main module as they start: never start it at import
        with LocalServer(Settings(data_dir=..., token_file=...)) as url:
            Client(url, token).einsum(...)
"""

from __future__ import annotations

import functools
import socket
import threading
import time

import uvicorn

from .app import create_app
from .http_protocol import ConnectionLimits, GuardedHttpProtocol
from .settings import Settings

__all__ = ["LocalServer", "listening_socket", "uvicorn_config"]


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound IPv4 TCP socket with TCP_NODELAY, which the connections it accepts inherit.

    Without TCP_NODELAY a response written as headers then body waits for the client's delayed ACK
    (~40 ms per request on loopback).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def uvicorn_config(app, settings: Settings, **options) -> uvicorn.Config:
    """uvicorn's configuration for the app: the guarded HTTP protocol (header cap, slow-client timeouts) and no
    access log of uvicorn's own (server.middleware.RequestLog writes one)."""
    limits = ConnectionLimits(settings.max_header_bytes, settings.header_timeout_seconds,
                              settings.body_timeout_seconds)
    return uvicorn.Config(app, http=functools.partial(GuardedHttpProtocol, limits=limits), access_log=False,
                          log_config=None, **options)


class LocalServer:
    """uvicorn serving the app on 127.0.0.1 at a free port, in a thread; a context manager yielding its URL."""

    def __init__(self, settings: Settings, *, startup_timeout: float = 30.0) -> None:
        self.settings = settings
        self.startup_timeout = startup_timeout
        self.app = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        """Start serving and return the base URL once the server accepts connections (WorkerStartFailed inside a
        worker process that is importing the main module: see server.worker_start)."""
        self.app = create_app(self.settings)
        sock = listening_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn_config(self.app, self.settings, log_level="warning", timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the local einfhe server did not start")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        """Shut the server down (running jobs finish, queued ones are marked interrupted)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=60)
        self._server = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
