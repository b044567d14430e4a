"""The client's exception tree: every server code maps to a typed error; retries only where safe."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import httpx
import pytest

import client
from client import (
    BadRequest, ClientError, ConnectionFailed, Conflict, Forbidden, InternalServerError, NotFound, PayloadTooLarge,
    ServerError, WorkerStartFailed,
)
from client.errors import error_for_status
from client.http import Http
from server import CODES


def test_exported_names():
    assert sorted(client.__all__) == sorted([
        "BadRequest", "Client", "ClientError", "Conflict", "ConnectionFailed", "EncryptedModel", "Forbidden",
        "InternalServerError", "JobFailed", "KeyStore", "NotFound", "PayloadTooLarge", "PlanInfo", "ServerError",
        "Unauthorized", "WorkerStartFailed",
    ])
    for name in client.__all__:
        assert hasattr(client, name), name


@pytest.mark.parametrize("code, status", sorted(CODES.items()))
def test_every_server_code_maps_to_a_typed_error(code, status):
    error = error_for_status(status, code, "m")
    assert isinstance(error, ServerError) and error.code == code and error.status == status
    expected = {403: Forbidden, 404: NotFound, 409: Conflict, 413: PayloadTooLarge}.get(status)
    if expected is not None:
        assert isinstance(error, expected)
    if status in (400, 405, 411, 415, 422):
        assert isinstance(error, BadRequest)


def _http(handler, retries=2) -> Http:
    return Http("http://einfhe", "t" * 20, retries=retries, transport=httpx.MockTransport(handler))


def test_idempotent_calls_retry_on_503():
    calls = []

    def handler(request):
        calls.append(request.method)
        return httpx.Response(503 if len(calls) < 3 else 200, json={"ok": True})

    http = _http(handler)
    http.backoff = 0
    assert http.request("GET", "/jobs").json() == {"ok": True}
    assert calls == ["GET"] * 3


def test_posts_are_not_retried_after_reaching_the_server():
    calls = []

    def handler(request):
        calls.append(request.method)
        return httpx.Response(503, json={"error": {"code": "internal_error", "message": "busy"}})

    http = _http(handler)
    with pytest.raises(ServerError) as info:
        http.request("POST", "/jobs", content=b"x")
    assert calls == ["POST"] and info.value.status == 503 and info.value.code == "internal_error"


def test_worker_start_failed_is_its_own_error_and_not_retried():
    calls = []

    def handler(request):
        calls.append(request.method)
        return httpx.Response(503, json={"error": {"code": "worker_start_failed", "message": "add the guard"}})

    http = _http(handler)
    http.backoff = 0
    with pytest.raises(WorkerStartFailed) as info:
        http.request("GET", "/jobs")
    assert calls == ["GET"] and isinstance(info.value, InternalServerError) and info.value.message == "add the guard"


def test_unreachable_server_raises_connection_failed():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    http = _http(handler, retries=1)
    http.backoff = 0
    with pytest.raises(ConnectionFailed) as info:
        http.request("GET", "/jobs")
    assert isinstance(info.value, ClientError) and info.value.code == "connection_failed"


def test_non_json_error_gets_an_http_code():
    http = _http(lambda request: httpx.Response(400, text="nope"), retries=0)
    with pytest.raises(BadRequest) as info:
        http.request("GET", "/x")
    assert info.value.code == "http_400"


def test_waiting_on_a_server_that_answers_long_polls_at_once_does_not_hammer_it():
    """A job stuck `queued` on a server that ignores `wait`: the client polls at most ~10 times a second and
    gives up at its timeout."""
    polls = []

    def handler(request):
        polls.append(request.url.params.get("wait"))
        return httpx.Response(200, json={"id": "j", "status": "queued"})

    stuck = client.Client("http://einfhe", "t" * 20, progress=False, transport=httpx.MockTransport(handler))
    with pytest.raises(TimeoutError):
        stuck.wait("j", timeout=0.5)
    assert 2 <= len(polls) <= 8, len(polls)
