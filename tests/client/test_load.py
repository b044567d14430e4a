"""Load (issue 8), small: three tenants' clients send encrypted einsums to a real uvicorn server at once for a few
seconds; every answer decrypts to numpy's within the CKKS error bound and none is lost (bench/load_bench.py runs
the full-size version: 16 clients at ring 2^14)."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

from client_helpers import SLOTS, TEST_PARAMS, TOKENS

from bench.load_client import run_load


def test_concurrent_tenants_get_every_answer_right(live_server):
    report = run_load(live_server, list(TOKENS.values()), seconds=3, shape=(8, 16), slots=SLOTS, params=TEST_PARAMS)
    for load in report.clients:
        assert load.errors == [] and load.wrong == 0, load
        assert load.correct == load.sent >= 3, load  # the first call and at least two in the window
        assert load.server_jobs == load.server_succeeded == load.sent, load  # the server ran each exactly once
    assert report.lost == 0 and report.correct == report.sent
    print(f"\nload: {report.sent} einsums by {len(report.clients)} clients in {report.seconds:.1f} s, "
          f"p50 {report.latency(0.5) * 1e3:.0f} ms, p95 {report.latency(0.95) * 1e3:.0f} ms")
