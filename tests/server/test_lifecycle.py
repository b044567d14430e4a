"""Package exports, a job interrupted by a restart, and `einfhe serve` (server.cli) as a real subprocess."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

from concurrent.futures import Future

import httpx
import pytest
from server_helpers import TOKENS, auth, free_port, start_server

import server
import server.api
import server.api.routes
from server import CODES, Executor, Settings, create_app


def test_exported_names():
    assert sorted(server.__all__) == sorted([
        "CODES", "JOB_CODES", "Executor", "JobOutcome", "JobTask", "KeySetCheck", "LocalProcessExecutor",
        "LocalServer", "ServiceError", "Settings", "create_app",
    ])
    assert server.api.__all__ == ["ROUTERS"] and server.api.routes.__all__ == ["ROUTERS"]
    for package in (server, server.api, server.api.routes):
        for name in package.__all__:
            assert hasattr(package, name), name


def test_error_codes_are_client_or_server_errors():
    assert all(400 <= status < 600 for status in CODES.values())


class NeverRuns(Executor):
    """An executor whose jobs never finish: stands in for a server killed mid-job."""

    def submit(self, task):
        return Future()

    def check_keyset(self, check):
        raise NotImplementedError

    def submit_call(self, fn, *args):
        raise NotImplementedError

    def shutdown(self):
        pass


def test_job_interrupted_by_restart_is_failed_not_lost(settings):
    service = create_app(settings, executor=NeverRuns()).state.service
    service.store.insert("jobs", id="j1", tenant="alice", plan_id="p", keyset_id="k", inputs=[], plains=[],
                         status="queued", error_code=None, error_message=None, finished=None, seconds=None,
                         result_size=None)
    service.store.close()  # the process dies here: no shutdown hook runs
    restarted = create_app(settings, executor=NeverRuns()).state.service
    job = restarted.store.get("jobs", "alice", id="j1")
    assert job["status"] == "failed" and job["error_code"] == "interrupted"
    restarted.close()


def test_cli_serves_and_logs_one_line_per_request(tmp_path, token_file):
    port = free_port()
    process = start_server(port, tmp_path / "d", token_file, "--workers", "1")
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/keysets", headers=auth("alice"), timeout=1)
        assert response.status_code == 200 and response.json() == []
        assert httpx.get(f"http://127.0.0.1:{port}/jobs/x", headers=auth("bob")).status_code == 404
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    access = [line for line in output.splitlines() if "einfhe.server.access" in line]
    assert len(access) == 3, output  # start_server's probe without a token, then the two requests above
    assert "GET /keysets 401" in access.pop(0)
    assert "GET /keysets 200" in access[0] and "tenant=alice" in access[0] and "ms" in access[0]
    assert "GET /jobs/x 404" in access[1] and "tenant=bob" in access[1]


def test_tokens_file_is_validated(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("alice:short\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        create_app(Settings(data_dir=tmp_path / "d", token_file=bad))
    assert TOKENS  # the fixtures' tokens are long enough to pass the same check
