"""Encoded plaintexts kept per backend: hits, the byte budget, and products that stay right when served from it."""

import numpy as np
import pytest

import einfhe
from einfhe.backends.openfhe import OpenFHEBackend
from einfhe.backends.plaintext_cache import PlaintextCache


def test_hits_evictions_and_off():
    cache, made = PlaintextCache(max_bytes=250), []

    def encode(tag):
        return lambda: made.append(tag) or tag

    a, b = np.arange(4.0), np.arange(4.0) + 1
    assert cache.get(a, 0, 100, encode("a0")) == "a0"
    assert cache.get(a.copy(), 0, 100, encode("again")) == "a0"  # same values and level: no new encoding
    assert cache.get(a, 1, 100, encode("a1")) == "a1"  # another level is another plaintext
    assert cache.get(b, 0, 100, encode("b0")) == "b0"  # over 250 bytes: the least recently used (a at 0) goes
    assert len(cache) == 2 and cache.used_bytes == 200
    assert cache.get(a, 0, 100, encode("a0 again")) == "a0 again"
    assert made == ["a0", "a1", "b0", "a0 again"]
    off = PlaintextCache(max_bytes=0)
    assert off.get(a, 0, 1, encode("x")) == "x" and len(off) == 0


@pytest.mark.fhe
def test_products_from_cached_plaintexts_match_fresh_ones():
    params = einfhe.Parameters.insecure_for_tests(2, 64)
    backend = OpenFHEBackend.generate(params, [])
    rng = np.random.default_rng(0)
    x, w = rng.uniform(-1, 1, 64), rng.uniform(-1, 1, 64)
    ct = backend.encrypt(x)
    results = [backend.decrypt(backend.rescale(backend.mul_plain(ct, w))) for _ in range(3)]
    assert len(backend.plaintexts) == 1  # encoded once, used three times
    for got in results:
        np.testing.assert_allclose(got, x * w, atol=1e-6)
    added = backend.decrypt(backend.add_plain(ct, w))
    np.testing.assert_allclose(added, x + w, atol=1e-6)
