"""Jiang-Kim-Lauter-Song: an encrypted matrix product with each operand in one ciphertext in its row-major layout
(no client replication; the client packs either operand transposed where the spec asks), on the simulator against numpy and on OpenFHE within `error_bound`."""

import numpy as np
import pytest

import einfhe
from einfhe.params.precision import error_bound

SHAPES = [(4, 4, 4), (3, 5, 2), (5, 3, 7), (8, 8, 8), (2, 2, 2)]


def _matrices(n, m, p, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, m)), rng.uniform(-1, 1, (m, p))


@pytest.mark.parametrize("n, m, p", SHAPES)
@pytest.mark.parametrize("spec", ["ij,jk->ik", "jk,ij->ik", "ij,kj->ik", "ij,jk->ki"])
def test_jkls_matches_numpy_with_one_unreplicated_ciphertext_per_operand(n, m, p, spec):
    a, b = _matrices(n, m, p)
    operands = {"ij,jk->ik": (a, b), "jk,ij->ik": (b, a), "ij,kj->ik": (a, b.T), "ij,jk->ki": (a, b)}[spec]
    plan = einfhe.compile(spec, *[einfhe.cipher(x.shape) for x in operands], slots=256, strategy="jkls")
    assert plan.strategy.startswith("jkls")
    for position in (0, 1):
        layout = plan.input_layout(position)
        assert layout.num_cts == 1 and all(d.kind == "axis" for d in layout.dims)  # no replicated copies
    assert plan.depth == 3
    np.testing.assert_allclose(einfhe.simulate(plan, *operands), np.einsum(spec, *operands), atol=1e-12)


@pytest.mark.parametrize("spec, shapes, cipher_mask", [
    ("ij,jk->ik", [(4, 4), (4, 4)], [True, False]),        # a plain operand
    ("ij,jk->ik", [(32, 32), (32, 32)], [True, True]),     # d^2 > slots
    ("ij,jk->ijk", [(4, 4), (4, 4)], [True, True]),        # nothing summed
])
def test_jkls_falls_back_to_iteration_space_where_it_does_not_apply(spec, shapes, cipher_mask):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s) for s in shapes]
    ops = [einfhe.cipher(s) if c else a for s, c, a in zip(shapes, cipher_mask, arrays)]
    plan = einfhe.compile(spec, *ops, slots=256, strategy="jkls", key_budget=1 << 62, upload_budget=1 << 62)
    assert "jkls" not in plan.strategy
    np.testing.assert_allclose(einfhe.simulate(plan, *arrays), np.einsum(spec, *arrays), atol=1e-9)


def test_the_upload_budget_chooses_jkls_over_client_replication():
    a, b = _matrices(64, 64, 64)
    ops = [einfhe.cipher(a.shape), einfhe.cipher(b.shape)]
    replicated = einfhe.compile("ij,jk->ik", *ops)
    assert replicated.cts_in == 64
    bounded = einfhe.compile("ij,jk->ik", *ops, upload_budget=4 << 20)
    assert bounded.strategy.startswith("jkls") and bounded.cts_in == 2
    assert "cheapest unconstrained" in bounded.explain()
    np.testing.assert_allclose(einfhe.simulate(bounded, a, b), a @ b, atol=1e-12)


@pytest.mark.fhe
@pytest.mark.parametrize("n, m, p, slots", [(4, 4, 4, 16), (3, 5, 2, 64)])
def test_jkls_on_openfhe(n, m, p, slots):
    a, b = _matrices(n, m, p, seed=3)
    plan = einfhe.compile("ij,jk->ik", einfhe.cipher(a.shape), einfhe.cipher(b.shape), slots=slots, strategy="jkls")
    assert plan.strategy.startswith("jkls")
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, slots))
    got = einfhe.decrypt(ctx, einfhe.run(ctx, plan, *[einfhe.encrypt(ctx, x, plan.input_layout(i))
                                                      for i, x in enumerate((a, b))]))
    assert np.abs(got - a @ b).max() <= error_bound(ctx.params, 1.0, m, plan.depth, plan.keyswitches)
