"""Fixtures for client tests: a real uvicorn server on a loopback port, two tenants, test rings allowed."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import pytest

from server import LocalServer, Settings

from client_helpers import TOKENS


@pytest.fixture
def settings(tmp_path):
    token_file = tmp_path / "tokens.txt"
    token_file.write_text("".join(f"{t}:{k}\n" for t, k in TOKENS.items()))
    return Settings(data_dir=tmp_path / "data", token_file=token_file, workers=2, allow_insecure_test_params=True)


@pytest.fixture
def live_server(settings):
    """The URL of a running server (stopped after the test)."""
    with LocalServer(settings) as url:
        yield url
