"""Noise-flooded decryption (IND-CPA-D): measured noise, flooded results within the bound the flooding noise gives,
fresh noise at every decryption with the standard deviation OpenFHE documents, and the parameters it needs."""

import numpy as np
import pytest

import einfhe
from einfhe import NoiseFlooding, measure_noise
from einfhe.params.precision import error_bound

SLOTS = 512


@pytest.fixture(scope="module")
def flooded():
    """A 16x32 matvec run under a noise-measuring context, then under a flooding one made from the measurement."""
    rng = np.random.default_rng(3)
    W, x = rng.standard_normal((16, 32)), rng.uniform(-1, 1, 32)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher(x.shape), slots=SLOTS)
    params = einfhe.Parameters.for_noise_flooding(plan.depth, SLOTS, secure=False)
    probe = einfhe.Context.for_plan(plan, params=params, flooding=NoiseFlooding())
    noise = measure_noise(probe, einfhe.run(probe, plan, W, einfhe.encrypt(probe, x, plan.input_layout(1))))
    flooding = NoiseFlooding(estimate=noise + 1)
    ctx = einfhe.Context.for_plan(plan, params=params, flooding=flooding)
    result = einfhe.run(ctx, plan, W, einfhe.encrypt(ctx, x, plan.input_layout(1)))
    return {"W": W, "x": x, "plan": plan, "params": params, "probe": probe, "ctx": ctx, "result": result,
            "flooding": flooding, "noise": noise}


def test_flooded_results_are_within_the_flooding_bound(flooded):
    params, flooding = flooded["params"], flooded["flooding"]
    W, x = flooded["W"], flooded["x"]
    ckks = error_bound(params, float(np.abs(W).max() * np.abs(x).max()), W.shape[1], 1, flooded["plan"].keyswitches)
    tolerance = ckks + flooding.slot_error(params.ring_dim)
    y = einfhe.decrypt(flooded["ctx"], flooded["result"])
    np.testing.assert_allclose(y, W @ x, atol=tolerance, rtol=0)
    assert 0 < flooded["noise"] < params.scale_bits  # log2 of the noise, in coefficient units


def test_every_decryption_draws_fresh_flooding_noise_of_the_documented_size(flooded):
    """Two decryptions of one ciphertext differ by two independent floods: their spread over the 512 slots matches
    NoiseFlooding.slot_std (OpenFHE's 2^(s/2 + log2 sqrt(12 q) + estimate) per coefficient, times sqrt(N))."""
    backend, ct = flooded["ctx"].backend, flooded["result"].cts[0]
    difference = backend.decrypt(ct) - backend.decrypt(ct)
    expected = np.sqrt(2) * flooded["flooding"].slot_std(flooded["params"].ring_dim)
    assert 0.8 < difference.std() / expected < 1.25, (difference.std(), expected)


def test_an_estimation_context_measures_noise_and_returns_no_values(flooded):
    with pytest.raises(einfhe.BackendError, match="measure_noise"):
        einfhe.decrypt(flooded["probe"], flooded["result"])
    with pytest.raises(einfhe.BackendError, match="noise-estimation context"):
        measure_noise(flooded["ctx"], flooded["result"])


def test_flooding_needs_its_parameters_and_keeps_128_bit_security(flooded):
    with pytest.raises(einfhe.ParameterError, match="for_noise_flooding"):
        einfhe.Context.for_plan(flooded["plan"], params=einfhe.Parameters.insecure_for_tests(2, SLOTS),
                                flooding=NoiseFlooding())
    with pytest.raises(einfhe.ParameterError):
        NoiseFlooding(estimate=99)
    for depth in range(1, 9):
        params, plain = einfhe.Parameters.for_noise_flooding(depth, 8192), einfhe.Parameters.derive(depth, 8192)
        assert params.secure and (params.scale_bits, params.first_mod_bits, params.depth) == (59, 60, depth + 1)
        assert params.log_qp <= einfhe.params.MAX_LOG_QP[params.ring_dim] and params.ring_dim >= plain.ring_dim


def test_a_saved_flooding_context_still_floods(flooded, tmp_path):
    einfhe.save_context(flooded["ctx"], tmp_path / "keys")
    loaded = einfhe.load_context(tmp_path / "keys")
    assert loaded.backend.flooding == flooded["flooding"]
    ct = flooded["result"].cts[0]
    assert np.abs(loaded.backend.decrypt(ct) - loaded.backend.decrypt(ct)).max() > 0
