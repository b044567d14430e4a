"""Parameter derivation at 128-bit security, refusal of weak overrides, and agreement with OpenFHE's check."""

import pytest

import einfhe
from einfhe.backends.openfhe import OpenFHEBackend
from einfhe.params import MAX_LOG_QP, Parameters


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 6, 9])
def test_derived_parameters_are_secure_and_openfhe_agrees(depth):
    params = Parameters.derive(depth, 64)
    assert params.secure and params.log_qp <= MAX_LOG_QP[params.ring_dim]
    OpenFHEBackend.generate(params, [])  # OpenFHE enforces the same HE-standard table


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("scale_bits, first_mod_bits", [(30, 40), (35, 45), (40, 50), (50, 60)])
def test_chosen_scales_give_sets_openfhe_accepts(depth, scale_bits, first_mod_bits):
    """OpenFHE's own 128-bit check (with its default key-switching digits: two up to 3 levels) accepts every set
    derive calls secure at a chosen scale; at depth 2 it once refused 30/40-bit sets that derive put on ring 2^13."""
    params = Parameters.derive(depth, 64, scale_bits=scale_bits, first_mod_bits=first_mod_bits)
    assert params.secure and params.log_qp <= MAX_LOG_QP[params.ring_dim]
    OpenFHEBackend.generate(params, [])


@pytest.mark.parametrize("depth", [1, 4, 6])
def test_one_ring_smaller_is_refused_by_both(depth):
    params = Parameters.derive(depth, 64)
    smaller = Parameters(params.ring_dim // 2, 64, depth)
    with pytest.raises(einfhe.ParameterError, match="below 128-bit security"):
        smaller.validate()
    unchecked = Parameters(params.ring_dim // 2, 64, depth, security="INSECURE-TEST-ONLY")
    import openfhe

    cp = openfhe.CCParamsCKKSRNS()
    cp.SetMultiplicativeDepth(depth)
    cp.SetScalingModSize(40)
    cp.SetFirstModSize(60)
    cp.SetRingDim(unchecked.ring_dim)
    cp.SetScalingTechnique(openfhe.ScalingTechnique.FIXEDMANUAL)
    cp.SetSecurityLevel(openfhe.SecurityLevel.HEStd_128_classic)
    with pytest.raises(RuntimeError, match="does not comply"):
        openfhe.GenCryptoContext(cp)


def test_slots_drive_the_ring_up():
    assert Parameters.derive(1, 16384).ring_dim == 32768


def test_unreachable_depth_says_what_to_do():
    with pytest.raises(einfhe.ParameterError, match="reduce the depth"):
        Parameters.derive(40, 64)


def test_context_refuses_too_shallow_override():
    plan = einfhe.compile("ij,jk,kl->il", einfhe.cipher((2, 2)), einfhe.cipher((2, 2)), einfhe.cipher((2, 2)), slots=16)
    assert plan.depth == 2
    with pytest.raises(einfhe.PlanError, match="needs depth 2"):
        einfhe.Context.for_plan(plan, params=Parameters.insecure_for_tests(1, 16))


def test_json_round_trip_and_fingerprint():
    params = Parameters.derive(3, 1024)
    again = Parameters.from_json(params.to_json())
    assert again == params and again.fingerprint() == params.fingerprint()
    assert Parameters.derive(2, 1024).fingerprint() != params.fingerprint()
    with pytest.raises(einfhe.ParameterError):
        Parameters.from_json({**params.to_json(), "ring_dim": 1024})
