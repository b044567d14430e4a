"""Slow and oversized clients over a real loopback socket (issue 18): header cap, header and body timeouts; and the
newcomer's surface: /health, Allow on 405, `einfhe serve` printing its URL and refusing bad token files in a line."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import select
import socket
import subprocess
import time

import httpx
import pytest
from server_helpers import assert_error, call, free_port, serve_command, start_server

from server import Settings
from server.local import LocalServer

_TIMEOUT = 0.5  # the header and body timeouts of these servers, in seconds


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    directory = tmp_path_factory.mktemp("limits")
    tokens = directory / "tokens.txt"
    tokens.write_text("alice:alice-token-0123456789\n")
    settings = Settings(data_dir=directory / "data", token_file=tokens, workers=1, max_header_bytes=4096,
                        header_timeout_seconds=_TIMEOUT, body_timeout_seconds=_TIMEOUT)
    with LocalServer(settings) as address:
        yield address


def _exchange(url: str, chunks: list[bytes], pause: float = 0.0) -> tuple[bytes, float]:
    """Send `chunks` with `pause` seconds between them, then read until the server closes; what it answered and
    how long the connection lasted."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:  # the server has answered (or closed): stop sending, read why
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):  # refused before we were done sending: read why
                break
            time.sleep(pause)
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return answer, time.monotonic() - started


def test_headers_that_never_end_are_closed_with_408(url):
    answer, lasted = _exchange(url, [b"GET /health HTTP/1.1\r\nHost: x\r\n"])
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in answer, answer
    assert 0.9 * _TIMEOUT <= lasted < _TIMEOUT + 5, (lasted, answer)


def test_a_connection_that_sends_nothing_is_closed(url):
    answer, lasted = _exchange(url, [])
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert lasted < _TIMEOUT + 5, lasted


def test_a_stalled_body_is_closed_with_408(url):
    head = (b"PUT /operands/W HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alice-token-0123456789\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n")
    answer, lasted = _exchange(url, [head, b"\x93NUMPY"])
    assert b" 408 " in answer.split(b"\r\n")[0] and b'"request_timeout"' in answer, answer
    assert lasted < _TIMEOUT + 5, lasted


def test_oversized_headers_are_refused_as_they_arrive(url):
    # 1 MiB of one header, sent in pieces: refused once the cap is passed, never held whole
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    answer, _ = _exchange(url, [head] + [b"a" * 65536] * 16)
    assert answer.startswith(b"HTTP/1.1 431 ") and b'"headers_too_large"' in answer, answer


def test_a_prompt_client_is_served_on_the_same_server(url):
    response = httpx.put(f"{url}/operands/W", content=b"\x93NUMPY" + b"\x00" * 100,
                         headers={"Authorization": "Bearer alice-token-0123456789",
                                  "Content-Type": "application/octet-stream"})
    assert_error(response, 400, "malformed_blob")  # read whole and judged, not timed out
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


@pytest.mark.anyio
async def test_health_needs_no_token_and_405_says_allow(app):
    health = await call(app, "GET", "/health", None)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    response = await call(app, "DELETE", "/jobs")
    assert_error(response, 405, "method_not_allowed")
    allowed = app.openapi()["paths"]["/jobs"]
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {m.upper() for m in allowed} | {"HEAD"}


@pytest.mark.parametrize("tokens, says", [("alice:short\n", "at least 16 characters"), (None, "cannot read")])
def test_einfhe_serve_refuses_a_bad_token_file_in_one_line(tmp_path, tokens, says):
    token_file = tmp_path / "tokens.txt"
    if tokens is not None:
        token_file.write_text(tokens)
    command, env = serve_command(free_port(), tmp_path / "data", token_file)
    process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 1 and "Traceback" not in process.stderr, process.stderr
    assert len(lines) == 1 and lines[0].startswith("einfhe serve: error: ") and says in lines[0], lines


def test_einfhe_serve_prints_its_url(tmp_path, token_file):
    port = free_port()
    process = start_server(port, tmp_path / "d", token_file, "--workers", "1")
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"listening on http://127.0.0.1:{port}" in output, output
