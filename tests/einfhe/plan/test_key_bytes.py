"""Evaluation-key bytes in the plan estimate: each key-switching key from the parameter set's own digits and towers,
bootstrapping's keys where the set bootstraps, checked against first principles, a measured 2^16 key set and the
serialized keys OpenFHE makes on small insecure rings."""

import math
import re
from dataclasses import replace

import numpy as np
import pytest

import einfhe
from einfhe.params import INSECURE, Parameters, bootstrap_scale_bits
from einfhe.plan import Bootstrap
from einfhe.plan.budget import DEFAULT_KEY_BUDGET, Budget, Footprint, over_budget_error
from einfhe.plan.cost import bootstrap_key_count, estimate_plan, evaluation_key_bytes, key_switching_key_bytes


def _reference_key_bytes(params: Parameters, keys: int) -> int:
    """Key bytes from first principles: a key holds 2 polynomials per digit over the Q towers (one per level of
    the chain plus the first modulus) and the P towers (60-bit primes covering the largest digit's bits), 8 bytes
    per coefficient of the ring."""
    q_towers = params.total_depth + 1
    digits = params.digits or 3  # OpenFHE's default for chains above 3 levels (every set used here)
    per_digit = math.ceil(q_towers / digits)
    largest_digit_bits = params.first_mod_bits + (per_digit - 1) * params.scale_bits
    p_towers = math.ceil((largest_digit_bits + 1) / 60)
    return (q_towers + p_towers) * params.ring_dim * 8 * 2 * digits * keys


def _matvec(n: int, slots: int):
    return einfhe.compile("ij,j->i", np.ones((n, n)), einfhe.cipher((n,)), slots=slots)


def _bootstrapped(plan):
    """`plan` with a bootstrap of its output appended."""
    return replace(plan, steps=plan.steps + (Bootstrap(len(plan.steps), plan.outputs[0]),),
                   outputs=(len(plan.steps),))


def test_a_plain_plan_prices_its_relinearization_and_rotation_keys_from_first_principles():
    plan = _matvec(64, 8192)
    for params in (Parameters.derive(4, 8192), Parameters.derive(6, 8192)):
        assert not params.bootstrap and params.total_depth > 3
        assert estimate_plan(plan, params).key_bytes == _reference_key_bytes(params, 1 + len(plan.rotations))


def test_a_bootstrapped_set_prices_its_digits_and_bootstrap_keys():
    """Six levels between bootstraps at 128 slots take six digits (ecf4ab0); bench/bootstrap_bench.py measured that
    set's keys, 43 bootstrap keys and the relinearization key, at 7.99 GiB (BENCHMARKS.md, the digits CNN section):
    the estimate must agree within that figure's rounding."""
    params = Parameters.derive(6, 128, bootstrap=True)
    assert params.digits == 6 and params.ring_dim == 65536
    plan = _matvec(8, 128)
    keys = 1 + len(plan.rotations) + bootstrap_key_count(128)
    assert estimate_plan(plan, params).key_bytes == _reference_key_bytes(params, keys)
    assert evaluation_key_bytes(params, 0) / 2**30 == pytest.approx(7.99, abs=0.005)
    three_digits = replace(params, digits=0)  # the digits the estimate assumed before: 4.5 GiB
    assert evaluation_key_bytes(params, 0) > 1.7 * evaluation_key_bytes(three_digits, 0)


def test_the_key_budget_sees_a_bootstrapped_plans_keys():
    plan = _matvec(16, 8192)
    boot = _bootstrapped(plan)
    params = Parameters.derive(max(1, boot.depth), 8192, bootstrap=True)
    footprint = Footprint.of(boot, "bootstrapped")
    assert footprint.key_bytes == _reference_key_bytes(params, 1 + len(boot.rotations) + bootstrap_key_count(8192))
    assert Footprint.of(plan, "plain").fits(Budget()) and not footprint.fits(Budget())
    error = over_budget_error([footprint], Budget(), "ij,j->i")
    assert error.needs["key_budget"] == footprint.key_bytes > DEFAULT_KEY_BUDGET


@pytest.mark.parametrize("digits", [0, 6])
def test_the_estimate_matches_openfhes_serialized_keys_on_a_small_ring(digits):
    """On an insecure 2^10 ring with bootstrapping: the keys OpenFHE makes (relinearization, the plan's rotations,
    bootstrapping's) serialize to the first-principles bytes plus OpenFHE's per-tower headers (measured 1-3% on
    rings 2^8-2^10, less on larger ones); the estimate, which takes the 2^16 bootstrap key count, is above them."""
    from einfhe.backends.openfhe import OpenFHEBackend

    params = Parameters(1024, 8, 2, bootstrap_scale_bits(1024, 8, 60), 60, INSECURE, True, digits).validate()
    plan = _matvec(8, 8)
    backend = OpenFHEBackend.generate(params, plan.rotations)
    automorphism_keys = len(backend.cc.GetExistingEvalAutomorphismKeyIndices(backend.key_tag))
    blobs = backend.export_evaluation_keys()
    serialized = len(blobs["mult_key"]) + len(blobs["rotation_keys"])
    expected = (1 + automorphism_keys) * key_switching_key_bytes(params)
    assert 0 <= serialized - expected <= 0.03 * serialized
    assert serialized <= estimate_plan(plan, params).key_bytes


def test_explain_names_every_key_its_key_bytes_count():
    """The report's key line adds up: relinearization, rotation and bootstrapping keys times one key's bytes (from
    first principles) are the bytes it prints, for a plain and a bootstrapped set."""
    from einfhe.plan.report import explain

    plan = _matvec(16, 128)
    for params in (Parameters.derive(4, 128), Parameters.derive(6, 128, bootstrap=True)):
        line = next(line for line in explain(plan, params=params).splitlines() if "evaluation keys" in line)
        counts = [int(n) for n in re.findall(r"(\d+) (?:rotation|relinearization|bootstrapping)", line)]
        printed = int(re.search(r"= ([\d,]+) B$", line).group(1).replace(",", ""))
        assert printed == _reference_key_bytes(params, sum(counts))
        assert ("bootstrapping" in line) == params.bootstrap
