"""The FIXEDMANUAL chain's primes (einfhe.backends.moduli) and the exact rescales they give plaintext products."""

from __future__ import annotations

import numpy as np
import pytest

import einfhe
from einfhe.backends.moduli import rescale_primes, scale_corrections
from einfhe.backends.openfhe import OpenFHEBackend
from einfhe.params import error_bound

DEPTH, SLOTS, SCALE_BITS = 3, 2048, 30


@pytest.fixture(scope="module")
def backend():
    params = einfhe.Parameters.insecure_for_tests(DEPTH, SLOTS, scale_bits=SCALE_BITS)
    return OpenFHEBackend.generate(params, [])


@pytest.mark.fhe
def test_primes_divide_the_modulus_in_openfhe_order(backend):
    modulus = backend.cc.GetElementParams().GetModulus()
    primes = rescale_primes(modulus, SCALE_BITS, backend.params.ring_dim, DEPTH)
    assert primes is not None and len(primes) == DEPTH
    first = modulus
    for q in primes:
        assert first % q == 0 and q % (2 * backend.params.ring_dim) == 1
        first //= q
    assert first.bit_length() == backend.params.first_mod_bits  # what is left is the first modulus
    # the first rescale drops the first prime above 2^scale_bits, then below and above alternate
    assert primes[0] > 1 << SCALE_BITS > primes[1] and primes[2] > primes[0]


def test_an_unknown_chain_gets_no_correction():
    assert rescale_primes((1 << 61) - 1, SCALE_BITS, 1024, 2) is None  # a Mersenne prime: no scaling primes
    assert scale_corrections(None, SCALE_BITS, 2) == (1.0, 1.0)


@pytest.mark.fhe
def test_plaintext_products_rescale_onto_the_exact_scale(backend):
    """Three plaintext products, each rescaled: the result is off by the encryption noise only, far below the
    relative error OpenFHE's nominal scale would leave (the product of 2^scale_bits / q over the levels)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(500, 1000, SLOTS)
    weights = [rng.uniform(0.5, 1.5, SLOTS) for _ in range(DEPTH)]
    ct = backend.encrypt(x)
    for w in weights:
        ct = backend.rescale(backend.mul_plain(ct, w))
    exact = x * np.prod(weights, axis=0)
    relative = np.abs(backend.decrypt(ct) - exact) / np.abs(exact)
    corrections = backend._scale_corrections()
    uncorrected = abs(1.0 / np.prod(corrections) - 1.0)  # what the nominal scale would leave, for every slot
    noise = error_bound(backend.params, 1.0, depth=DEPTH) / 500  # relative: the encryption noise bound
    assert uncorrected > 20 * noise  # the check below can tell the two apart
    assert relative.max() < noise


@pytest.mark.fhe
def test_ciphertext_products_keep_their_true_scale_to_the_end(backend):
    """x*y rescaled has the scale 2^2s / q; the backend carries it, the next plaintext product encodes for it and
    decryption divides it out: the chain x*y*w decrypts within the noise, not off by the factor 2^s / q."""
    rng = np.random.default_rng(1)
    x, y, w = rng.uniform(1000, 2000, SLOTS), rng.uniform(1000, 2000, SLOTS), rng.uniform(0.5, 1.5, SLOTS)
    product = backend.rescale(backend.mul(backend.encrypt(x), backend.encrypt(y)))
    chained = backend.rescale(backend.mul_plain(product, w))
    mismatch = abs(1.0 / backend._scale_corrections()[0] - 1.0)  # what the nominal scale would leave
    assert product.GetScalingFactor() == pytest.approx(2.0 ** SCALE_BITS / backend._scale_corrections()[0])
    for ct, exact in ((product, x * y), (chained, x * y * w)):
        assert (np.abs(backend.decrypt(ct) - exact) / exact).max() < mismatch / 20
