"""N=2^13 at 128-bit: a 55-bit first modulus and three key-switching digits fit depths 1-2 there, on request."""

import pytest

import einfhe
from einfhe.backends.openfhe import OpenFHEBackend
from einfhe.params import MAX_LOG_QP, SMALL_RING_FIRST_MOD_BITS, Parameters


@pytest.mark.parametrize("depth", [1, 2])
def test_depths_one_and_two_fit_the_small_ring_only_on_request(depth):
    default = Parameters.derive(depth, 4096)
    small = Parameters.derive(depth, 4096, small_first_modulus=True)
    assert (default.ring_dim, default.first_mod_bits, default.digits) == (16384, 60, 0)
    assert (small.ring_dim, small.first_mod_bits) == (8192, SMALL_RING_FIRST_MOD_BITS)
    assert small.secure and small.log_qp <= MAX_LOG_QP[8192] < default.log_qp
    assert small.digits == min(3, depth + 1)


@pytest.mark.fhe
@pytest.mark.parametrize("depth, lift", [(1, False), (2, False), (1, True)])
def test_openfhe_accepts_the_small_ring_at_128_bit(depth, lift):
    params = Parameters.derive(depth, 4096, small_first_modulus=True, lift=lift)
    assert params.lifted == lift
    backend = OpenFHEBackend.generate(params, [1])  # OpenFHE checks 128-bit (HEStd_128_classic) itself
    assert backend.cc.GetRingDimension() == 8192
    chain = backend.cc.GetElementParams().GetModulus()
    first = chain.bit_length() - params.total_depth * params.scale_bits
    assert first in range(params.first_mod_bits - 1, params.first_mod_bits + 2)


@pytest.mark.parametrize("depth, bootstrap", [(3, False), (1, True)])
def test_deeper_or_bootstrapped_programs_keep_the_default_first_modulus(depth, bootstrap):
    params = Parameters.derive(depth, 4096, bootstrap=bootstrap, small_first_modulus=True)
    assert params.first_mod_bits == 60 and params.digits == 0 and params.ring_dim > 8192


def test_digits_round_trip_and_default_sets_keep_their_json():
    small = Parameters.derive(2, 4096, small_first_modulus=True)
    assert Parameters.from_json(small.to_json()) == small
    assert "digits" not in Parameters.derive(2, 8192).to_json()  # older fingerprints unchanged
    with pytest.raises(einfhe.ParameterError, match="digits"):
        Parameters(8192, 4096, 1, digits=5).validate()


def test_the_security_estimate_counts_explicit_digits():
    # depth 3 at N=2^13: one tower per digit keeps P to one 60-bit prime (50 + 3*35 + 60 = 215 bits), three digits
    # put two towers in one digit (85 bits) and need two P primes (275 bits: refused)
    assert Parameters(8192, 4096, 3, 35, 50, digits=4).validate().log_qp == 50 + 3 * 35 + 60
    with pytest.raises(einfhe.ParameterError, match="below 128-bit"):
        Parameters(8192, 4096, 3, 35, 50).validate()


@pytest.mark.fhe
def test_openfhe_accepts_depth_three_in_four_digits_at_the_small_ring():
    params = Parameters(8192, 4096, 3, 35, 50, digits=4).validate()
    backend = OpenFHEBackend.generate(params, [1])  # OpenFHE checks 128-bit (HEStd_128_classic) itself
    assert backend.cc.GetRingDimension() == 8192
    assert backend.cc.GetElementParams().GetModulus().bit_length() in range(154, 157)
