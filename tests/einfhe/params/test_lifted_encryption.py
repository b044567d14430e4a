"""Lifted encryption: the client encrypts one level up at scale 2^scale_bits * q and rescales, so the fresh noise
is divided by q; the upload keeps its towers and plans run unchanged."""

from dataclasses import replace

import numpy as np
import pytest

import einfhe
from einfhe.backends.openfhe import OpenFHEBackend
from einfhe.params import Parameters, error_bound

SLOTS = 512


def test_derive_lifts_where_the_ring_has_room_and_json_keeps_older_sets():
    lifted = Parameters.derive(1, 8192, lift=True)
    assert lifted.lifted and lifted.ring_dim == 16384 and lifted.total_depth == 2
    assert Parameters.from_json(lifted.to_json()) == lifted
    assert "lifted" not in Parameters.derive(1, 8192).to_json()
    # depth 2 on N=2^13 has no room for the extra level (four towers in three digits): it stays unlifted there
    small = Parameters.derive(2, 4096, small_first_modulus=True, lift=True)
    assert small.ring_dim == 8192 and not small.lifted
    assert not Parameters.derive(1, 4096, bootstrap=True, lift=True).lifted


@pytest.mark.fhe
def test_lifted_encryption_divides_the_fresh_noise():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, SLOTS)
    plain = Parameters.insecure_for_tests(1, SLOTS)
    errors = {}
    for params in (plain, replace(plain, lifted=True)):
        backend = OpenFHEBackend.generate(params, [])
        ct = backend.encrypt(x)
        assert backend.level(ct) == int(params.lifted)  # the upload has the towers an unlifted one has
        errors[params.lifted] = np.abs(backend.decrypt(ct) - x).max()
    # one rescale's share of the bound (Cheon et al.'s B_rs / 2^scale_bits): what is left of a lifted encryption
    rescale = error_bound(plain, 1.0, keyswitches=1) - error_bound(plain, 1.0)
    assert errors[True] < rescale < errors[False]


@pytest.mark.fhe
def test_a_plan_runs_on_lifted_ciphertexts_through_bytes():
    rng = np.random.default_rng(1)
    W, x = rng.uniform(-1, 1, (16, 16)), rng.uniform(-1, 1, 16)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((16,)), slots=SLOTS)
    ctx = einfhe.Context.for_plan(plan, params=replace(Parameters.insecure_for_tests(plan.depth, SLOTS), lifted=True))
    blob = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, x, plan.input_layout(1)))
    got = einfhe.decrypt(ctx, einfhe.run(ctx, plan, W, einfhe.tensor_from_bytes(ctx, blob)))
    bound = error_bound(ctx.params, 1.0, terms=16, depth=plan.depth, keyswitches=plan.keyswitches)
    assert np.abs(got - W @ x).max() < bound
