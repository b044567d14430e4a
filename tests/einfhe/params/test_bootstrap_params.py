"""Bootstrapping parameters OpenFHE accepts: the correction factor einfhe passes agrees with OpenFHE's default,
derive picks a scale within it at every ring (2^16 included), a wider gap is refused by einfhe and by OpenFHE
alike, and sparse-slot bootstraps decrypt to their input within the precision the gap leaves."""

import numpy as np
import openfhe  # noqa: F401  (before anything that may load torch)
import pytest

import einfhe
from einfhe.backends.openfhe import OpenFHEBackend
from einfhe.params import (
    BOOTSTRAP_DEPTH, BOOTSTRAP_GAP, BOOTSTRAP_LEVEL_BUDGET, BOOTSTRAP_MIN_SCALE_BITS, INSECURE, MAX_LOG_QP, Parameters,
    bootstrap_headroom, correction_factor,
)
from einfhe.backends.openfhe_context import crypto_context


def _openfhe_default_correction_factor(ring_dim: int, slots: int) -> int:
    """OpenFHE's own correction factor for FIXEDMANUAL bootstrapping (set-up without its precomputation)."""
    cp = openfhe.CCParamsCKKSRNS()
    cp.SetMultiplicativeDepth(BOOTSTRAP_DEPTH + 1)
    cp.SetScalingModSize(50)
    cp.SetFirstModSize(60)
    cp.SetBatchSize(slots)
    cp.SetRingDim(ring_dim)
    cp.SetScalingTechnique(openfhe.ScalingTechnique.FIXEDMANUAL)
    cp.SetSecurityLevel(openfhe.SecurityLevel.HEStd_NotSet)
    cc = openfhe.GenCryptoContext(cp)
    for feature in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH,
                    openfhe.PKESchemeFeature.LEVELEDSHE, openfhe.PKESchemeFeature.ADVANCEDSHE,
                    openfhe.PKESchemeFeature.FHE):
        cc.Enable(feature)
    cc.EvalBootstrapSetup(list(BOOTSTRAP_LEVEL_BUDGET), [0, 0], slots, 0, False)
    return cc.GetCKKSBootCorrectionFactor()


@pytest.mark.parametrize("log_ring", [6, 10, 14, 16])
def test_correction_factor_is_openfhes_default_or_one_bit_safer(log_ring):
    for log_slots in range(2, log_ring):
        ours = correction_factor(2**log_ring, 2**log_slots)
        theirs = _openfhe_default_correction_factor(2**log_ring, 2**log_slots)
        assert theirs - 1 <= ours <= theirs, (log_ring, log_slots, ours, theirs)


@pytest.mark.parametrize("depth, slots", [(4, 8192), (2, 128), (6, 1024), (9, 8192), (1, 32768)])
def test_derived_bootstrap_parameters_fit_the_correction_factor_at_128_bit(depth, slots):
    params = Parameters.derive(depth, slots, bootstrap=True)
    gap = params.first_mod_bits - params.scale_bits
    assert params.secure and params.ring_dim == 65536 and params.log_qp <= MAX_LOG_QP[65536]
    assert 1 <= gap <= correction_factor(params.ring_dim, slots)
    assert params.total_depth == depth + BOOTSTRAP_DEPTH + 1  # the level a bootstrap's input keeps


def test_deep_stretches_keep_the_scale_floor_by_more_key_switching_digits():
    """Six levels between bootstraps used to shrink the scale to 2^48, where one bootstrap's error was 0.26; the
    set now keeps 2^55 with six key-switching digits (a smaller P), and the default three where they suffice."""
    shallow, deep = Parameters.derive(3, 128, bootstrap=True), Parameters.derive(6, 128, bootstrap=True)
    assert shallow.digits == 0 and shallow.scale_bits >= BOOTSTRAP_MIN_SCALE_BITS
    assert deep.digits > 3 and deep.scale_bits >= BOOTSTRAP_MIN_SCALE_BITS and deep.log_qp <= MAX_LOG_QP[65536]
    with pytest.raises(einfhe.ParameterError, match=r"max_depth <= 11"):
        Parameters.derive(12, 128, bootstrap=True)
    for depth in range(1, 12):
        assert Parameters.derive(depth, 128, bootstrap=True).scale_bits >= BOOTSTRAP_MIN_SCALE_BITS


def test_openfhe_accepts_the_many_digit_set_at_128_bit():
    """OpenFHE's own 128-bit check (its P for those digits; it refuses a ring too small for Q*P) passes the set
    derive gives six levels between bootstraps."""
    params = Parameters.derive(6, 128, bootstrap=True)
    cc = crypto_context(params)
    assert cc.GetRingDimension() == 65536 and cc.GetMultiplicativeDepth() == params.total_depth
    with pytest.raises(einfhe.BackendError):  # the same scale and depth with OpenFHE's default three digits
        crypto_context(Parameters(65536, 128, 6, params.scale_bits, params.first_mod_bits, params.security, True))


def test_the_issue_case_gets_a_gap_openfhe_accepts():
    """Parameters.derive(4, 8192, bootstrap=True) used to give a 10-bit gap (60 over 50) that OpenFHE refused at
    2^16, where its correction factor is 7; it now takes einfhe's 5-bit gap, values below 16."""
    params = Parameters.derive(4, 8192, bootstrap=True)
    assert params.ring_dim == 65536 and params.first_mod_bits - params.scale_bits == BOOTSTRAP_GAP
    assert correction_factor(65536, 8192) == 7 and BOOTSTRAP_GAP <= 7
    assert bootstrap_headroom(params.scale_bits, params.first_mod_bits) == 2.0 ** (BOOTSTRAP_GAP - 1)


def test_a_gap_wider_than_the_correction_factor_is_refused_with_the_scale_to_use():
    with pytest.raises(einfhe.ParameterError, match="scale_bits >= 53"):
        Parameters.derive(4, 8192, scale_bits=50, bootstrap=True)
    with pytest.raises(einfhe.ParameterError, match="at most 9 bits"):
        Parameters(4096, 2048, 2, 50, 60, INSECURE, True).validate()
    Parameters(4096, 2048, 2, 50, 60, INSECURE, False).validate()  # without bootstrapping the gap is free


@pytest.mark.fhe
def test_openfhe_refuses_the_gap_einfhe_refuses():
    """The same set, unvalidated, fails inside OpenFHE's EvalBootstrap; one bit less of gap bootstraps."""
    wide = Parameters(4096, 2048, 2, 50, 60, INSECURE, True)
    backend = OpenFHEBackend.generate(wide, [])
    with pytest.raises(einfhe.BackendError, match="correction factor"):
        backend.bootstrap(backend.encrypt(np.full(2048, 0.5)))
    fits = Parameters(4096, 2048, 2, 51, 60, INSECURE, True).validate()
    backend = OpenFHEBackend.generate(fits, [])
    x = np.random.default_rng(0).uniform(-1, 1, 2048)
    # a 9-bit gap at this ring keeps about 6 bits (measured: einfhe.params.bootstrap's docstring)
    np.testing.assert_allclose(backend.decrypt(backend.bootstrap(backend.encrypt(x))), x, atol=2.0**-4)


@pytest.mark.fhe
@pytest.mark.parametrize("slots", [8, 64])
def test_sparse_slot_bootstrap_refreshes_the_levels_and_keeps_the_values(slots):
    """Slots well below N/2 bootstrap sparsely (keys and precomputation for `slots` only): the result is back at
    a fresh level budget and decrypts to the input within 2^-8 (OpenFHE's bootstrapping keeps 12-14 bits here
    with einfhe's 5-bit gap, measured: see einfhe.params.bootstrap), values filling the headroom."""
    params = Parameters(1024, slots, 2, 60 - BOOTSTRAP_GAP, 60, INSECURE, True).validate()
    backend = OpenFHEBackend.generate(params, [])
    rng = np.random.default_rng(slots)
    x = rng.uniform(-1, 1, slots) * bootstrap_headroom(params.scale_bits, params.first_mod_bits) * 0.9
    ct = backend.encrypt(x)
    for _ in range(params.total_depth - 1):
        ct = backend.rescale(backend.mul_plain(ct, np.ones(slots)))
    refreshed = backend.bootstrap(ct)
    assert refreshed.GetLevel() < ct.GetLevel()
    np.testing.assert_allclose(backend.decrypt(refreshed), x, atol=2.0**-8, rtol=0)


@pytest.mark.fhe
def test_bootstraps_in_a_row_keep_a_scale_that_drifted_from_the_nominal_one():
    """A ciphertext's scale drifts from the nominal one (products rescaled by primes near, not at, the scale; in
    MiniLM's layer at ring 8192 OpenFHE's bootstrap turned a drift of 7e-11 into 5e-7, the next into 3e-3, the
    next into a zero scale), so the backend bootstraps a copy at the nominal scale and gives the result the ratio
    back: three bootstraps in a row of a value whose scale is 1e-3 off decrypt to it (x / (1 + 1e-3), up to 8 in
    magnitude: losing the ratio would be 8e-3 off) within the bootstrap's error (2^-8 here, as above)."""
    params = Parameters(1024, 64, 2, 60 - BOOTSTRAP_GAP, 60, INSECURE, True).validate()
    backend = OpenFHEBackend.generate(params, [])
    x = np.random.default_rng(3).uniform(-1, 1, 64) * 8
    ct = backend.rescale(backend.mul_plain(backend.encrypt(x), np.ones(64)))
    ct.SetScalingFactor(ct.GetScalingFactor() * (1 + 1e-3))  # the same polynomials now decrypt to x / (1 + 1e-3)
    for _ in range(3):
        while ct.GetLevel() < params.total_depth - 1:
            ct = backend.rescale(backend.mul_plain(ct, np.ones(64)))
        ct = backend.bootstrap(ct)
        np.testing.assert_allclose(backend.decrypt(ct), x / (1 + 1e-3), atol=2.0**-8, rtol=0)
