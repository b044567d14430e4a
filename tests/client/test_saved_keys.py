"""Keys reused across client processes (issue 18): `Client(..., keys=path)` saves the secret context with its key
set's id, and a later client with the same path uploads nothing new; when the server has dropped the key set, the
same keys are uploaded again."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import numpy as np
from client_helpers import SLOTS, TEST_PARAMS, TOKENS

from client import Client

ATOL = 1e-6


def _einsum(url: str, keys, W, x) -> np.ndarray:
    with Client(url, TOKENS["alice"], progress=False, keys=keys) as client:
        client.register_operand("W", W)
        return client.einsum("ij,j->i", "W", x, slots=SLOTS, params=TEST_PARAMS)


def test_a_second_client_process_reuses_the_saved_keys(live_server, tmp_path):
    rng = np.random.default_rng(18)
    W, keys = rng.standard_normal((4, 8)), tmp_path / "keys"
    for _ in range(2):  # two clients, as two processes would be: nothing shared but the directory
        x = rng.standard_normal(8)
        np.testing.assert_allclose(_einsum(live_server, keys, W, x), W @ x, atol=ATOL)
    with Client(live_server, TOKENS["alice"], progress=False) as client:
        keysets = client.http.request("GET", "/keysets").json()
        assert len(keysets) == 1  # uploaded once, by the first client
        client.delete_keys(keysets[0]["id"])
    x = rng.standard_normal(8)
    np.testing.assert_allclose(_einsum(live_server, keys, W, x), W @ x, atol=ATOL)  # the same keys, uploaded again
    with Client(live_server, TOKENS["alice"], progress=False) as client:
        again = client.http.request("GET", "/keysets").json()
    assert len(again) == 1 and again[0]["id"] != keysets[0]["id"]  # re-uploaded: the server checks the answer's key tag
    assert {p.suffix for p in keys.iterdir()} == {".context", ".json"} and (keys.stat().st_mode & 0o077) == 0
