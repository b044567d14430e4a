"""The cost model: prices from calibration data, plan estimates, the explain report, and the compiler's
choice between strategies on cases whose answer is known."""

import numpy as np
import pytest

import einfhe
from einfhe.plan.cost import PRICED_OPS, CostModel, estimate_plan, load_cost_model

RING = 16384


def _model(**override) -> CostModel:
    """A synthetic table at N=2^14, depth 1: every op 1 us unless overridden."""
    row = {op: override.get(op, 1e-6) for op in PRICED_OPS}
    return CostModel.from_json({
        "format": "einfhe.costs/1",
        "prices": {str(RING): {"1": {"0": row, "1": row}}},
        "ciphertext_bytes": {str(RING): {"1": {"0": {"bytes": 1000}, "1": {"bytes": 500}}}},
        "rotation_key_bytes": {str(RING): {"1": 100}},
        "relin_key_bytes": {str(RING): {"1": 50}},
    })


def _matvec(n, **kwargs):
    return einfhe.compile("ij,j->i", np.ones((n, n)), einfhe.cipher((n,)), slots=RING // 2, **kwargs)


def test_expensive_rotations_pick_the_plan_with_fewer():
    plan = _matvec(256, cost_model=_model(rotate=1.0, rotate_hoisted=1.0))
    other = _matvec(256, strategy="bsgs")
    assert plan.strategy == "iteration-space"
    assert plan.op_counts()["rotate"] < other.op_counts()["rotate"] + other.op_counts()["rotate_hoisted"]


def test_expensive_uploads_pick_the_plan_with_fewer_ciphertexts():
    plan = _matvec(256, cost_model=_model(encrypt=1.0))
    assert plan.strategy == "bsgs" and plan.cts_in == 1
    assert _matvec(256, strategy="iteration-space").cts_in == 8


def test_auto_keeps_the_cheapest_by_the_calibrated_model():
    model = load_cost_model()
    plans = {s: _matvec(1024, strategy=s) for s in ("iteration-space", "bsgs")}
    total = {s: p.estimated_seconds() + p.estimate().encrypt_seconds for s, p in plans.items()}
    assert _matvec(1024).strategy == min(total, key=total.get)
    assert model.price("rotate_hoisted", RING, 1, 0) < model.price("rotate", RING, 1, 0)


def test_estimate_is_the_sum_of_step_prices():
    model = _model(rotate=2e-3, mul_plain=1e-3)
    plan = _matvec(64, strategy="iteration-space")
    est = estimate_plan(plan, model=model)
    levels = plan.levels()
    expected = sum(model.price(s.op, RING, 1, levels[s.src if s.op == "rescale" else s.out]) for s in plan.steps)
    assert est.seconds == pytest.approx(expected)
    assert est.seconds_by_op["rescale"] == pytest.approx(model.price("rescale", RING, 1, 0))  # on its level-0 input
    assert est.upload_bytes == plan.cts_in * 1000
    # the context lifts the encryption one level, so each key spans 3 towers where the table's depth-1 keys span 2
    assert est.key_bytes == int(1.5 * 50 + len(plan.rotations) * 1.5 * 100)


def test_explain_shows_estimated_and_measured_time_and_bytes():
    plan = _matvec(16)
    stats = einfhe.RunStats()
    einfhe.simulate(plan, np.ones((16, 16)), np.ones(16), stats=stats)
    text = plan.explain(stats=stats)
    assert "estimated" in text and "measured" in text and "upload 1 ciphertext(s)" in text
    assert "est" in plan.explain() and "measured" not in plan.explain()


def test_a_malformed_table_is_refused():
    with pytest.raises(einfhe.ParameterError, match="not an einfhe cost table"):
        CostModel.from_json({"format": "something/else"})
    with pytest.raises(einfhe.PlanError, match="priced ops"):
        _model().price("bootstrap", RING, 1, 0)


def test_plain_operands_are_contracted_first_when_that_is_cheaper():
    rng = np.random.default_rng(4)
    x, A, B = rng.standard_normal(64), rng.standard_normal((64, 64)), rng.standard_normal((64, 64))
    operands = (einfhe.cipher((64,)), A, B)
    plan = einfhe.compile("i,ij,jk->k", *operands, slots=RING // 2)
    cipher_first = einfhe.compile("i,ij,jk->k", *operands, slots=RING // 2, optimize="greedy")
    assert plan.estimated_seconds() < cipher_first.estimated_seconds()
    assert plan.depth == 1 and cipher_first.depth == 2
    np.testing.assert_allclose(einfhe.simulate(plan, x, A, B), x @ A @ B, rtol=1e-9, atol=1e-9)


def test_ops_without_a_price_are_reported_not_raised():
    from dataclasses import replace

    from einfhe.plan import Bootstrap

    plan = _matvec(16)
    boot = replace(plan, steps=plan.steps + (Bootstrap(len(plan.steps), plan.outputs[0]),),
                   outputs=(len(plan.steps),))
    assert estimate_plan(boot).unpriced == ("bootstrap",)
    assert "not in the cost model (not counted): bootstrap" in boot.explain()


def test_an_already_encrypted_vector_is_multiplied_by_bsgs_not_relaid_out():
    from einfhe.layout import natural_layout

    operands = (np.ones((200, 256)), einfhe.cipher((256,), natural_layout((256,), RING // 2)))
    plan = einfhe.compile("ij,j->i", *operands, slots=RING // 2)
    relaid = einfhe.compile("ij,j->i", *operands, slots=RING // 2, strategy="iteration-space")
    rotations = lambda p: p.op_counts()["rotate"] + p.op_counts()["rotate_hoisted"]  # noqa: E731
    assert plan.strategy == "bsgs" and rotations(plan) < rotations(relaid) // 4
    assert plan.estimated_seconds() < relaid.estimated_seconds()
    assert "rotation-key bases" in plan.explain() and "pow2:" in plan.explain()


def test_a_final_product_free_reduction_rotates_one_level_down():
    plan = einfhe.compile("ij->i", einfhe.cipher((64, 64)), slots=RING // 2)
    levels = plan.levels()
    assert plan.op_counts()["level_reduce"] == 1 and plan.depth == 1
    assert all(levels[s.out] == 1 for s in plan.steps if s.op == "rotate")
    model = load_cost_model()
    assert model.price("rotate", RING, 1, 1) < model.price("rotate", RING, 1, 0)
    x = np.random.default_rng(3).standard_normal((64, 64))
    np.testing.assert_allclose(einfhe.simulate(plan, x), x.sum(axis=1), rtol=1e-9, atol=1e-9)
    product = einfhe.compile("ij,j->i", np.ones((64, 64)), einfhe.cipher((64,)), slots=RING // 2)
    assert product.op_counts()["level_reduce"] == 0


@pytest.mark.parametrize("spec, operands", [
    ("ij,j->i", lambda: (np.ones((64, 64)), einfhe.cipher((64,)))),
    ("ij,jk->ik", lambda: (einfhe.cipher((8, 8)), einfhe.cipher((8, 8)))),
])
def test_key_bytes_are_the_serialized_keys_of_the_context_made_for_the_plan(spec, operands):
    """Context.for_plan lifts the encryption one level where the ring has room, and every key spans that level too:
    the estimate is the serialized evaluation keys less the public key, which is the size of a fresh ciphertext on
    the whole chain (two polynomials over every tower)."""
    plan = einfhe.compile(spec, *operands())
    ctx = einfhe.Context.for_plan(plan)
    assert ctx.params.lifted
    estimate, model = plan.estimate(), load_cost_model()
    public_key = model.ct_bytes(estimate.ring_dim, ctx.params.total_depth, 0)
    serialized = len(einfhe.evaluation_keys_to_bytes(ctx))
    assert abs(serialized - estimate.key_bytes - public_key) <= 0.01 * serialized
    # on the context's own parameters the keys are priced from their digits and towers (einfhe.plan.cost)
    assert abs(serialized - plan.estimate(ctx.params).key_bytes - public_key) <= 0.01 * serialized


def test_a_plan_deeper_than_its_parameters_is_refused_with_a_typed_error():
    """A plan estimated on parameters two or more levels shallower than it once raised KeyError 'rescale' (the
    cost table has no rescale price past the last level)."""
    from einfhe.errors import ParameterError
    x = einfhe.cipher((8,))
    plan = einfhe.compile("i,i,i,i,i->i", x, x, x, x, x, slots=32768)
    shallow = einfhe.Parameters.derive(1, 32768)
    assert plan.depth == 3 and shallow.ring_dim == 65536 and shallow.depth == 1
    with pytest.raises(ParameterError, match="the plan needs 3 levels"):
        estimate_plan(plan, shallow)
    with pytest.raises(ParameterError, match="outside the 1 levels"):
        load_cost_model().price("rescale", 65536, 1, 3)
    assert estimate_plan(plan, einfhe.Parameters.derive(3, 32768)).seconds > 0


def _plaintext_uses(plan) -> tuple[int, int]:
    """(distinct (plaintext, level) pairs, plaintext ops) of `plan`."""
    levels = plan.levels()
    taken = [(s.plain, levels[s.out]) for s in plan.steps if getattr(s, "plain", None) is not None]
    return len(set(taken)), len(taken)


def test_a_reused_plaintext_is_priced_without_its_encoding():
    """bsgs over 4 column tiles takes each diagonal plaintext 4 times: the first product pays the encoding."""
    model = _model(mul_plain=1e-3, mul_plain_cached=1e-5)
    plan = einfhe.compile("ij,jtk->itk", np.ones((256, 256)), einfhe.cipher((256, 4, 8)), slots=2048,
                          strategy="bsgs", cost_model=model, key_budget=1 << 62, upload_budget=1 << 62)
    distinct, uses = _plaintext_uses(plan)
    assert uses == 4 * distinct
    assert estimate_plan(plan, model=model).seconds_by_op["mul_plain"] == pytest.approx(
        distinct * 1e-3 + (uses - distinct) * 1e-5)


def test_the_plaintext_cache_model_evicts_the_least_recently_used():
    from einfhe.plan import Mask, MulPlain
    from einfhe.plan.cost import EncodedPlaintexts, encoded_plaintext_bytes

    size = encoded_plaintext_bytes(RING, 2, RING // 2)
    cache = EncodedPlaintexts(RING, 1, RING // 2, capacity=2 * size)
    a, b, c = (MulPlain(0, 0, Mask(((k, k + 1),), RING // 2)) for k in range(3))
    assert [cache.reused(s, 0) for s in (a, b, a, c, a, b)] == [False, False, True, False, True, False]
    assert not cache.reused(a, 1)  # encoded at another level


def test_the_strategy_choice_follows_the_price_of_plaintext_reuse():
    """Over 4 column tiles, bsgs encodes 256 diagonals and reuses each 4 times; iteration space takes 1024
    distinct plaintexts with no rotations. With reuse priced as the calibration measures it (a small fraction of
    a cold product) bsgs wins; priced as dear as a cold product, iteration space does."""
    rng = np.random.default_rng(2)
    A, B = rng.uniform(-1, 1, (256, 256)), rng.uniform(-1, 1, (256, 4, 8))
    plans = {}
    for cached in (1e-6, 1.0):
        model = _model(mul_plain=1.0, mul_plain_cached=cached, rotate=1e-3, rotate_hoisted=1e-3)
        plans[cached] = einfhe.compile("ij,jtk->itk", A, einfhe.cipher(B.shape), slots=2048, cost_model=model,
                                       key_budget=1 << 62, upload_budget=1 << 62)
    assert plans[1e-6].strategy == "bsgs" and plans[1.0].strategy == "iteration-space"
    assert _plaintext_uses(plans[1e-6])[0] < _plaintext_uses(plans[1.0])[0]
    for plan in plans.values():
        np.testing.assert_allclose(einfhe.simulate(plan, A, B), np.einsum("ij,jtk->itk", A, B), atol=1e-9)


def test_the_calibrated_table_prices_a_cached_plaintext_op_below_a_cold_one():
    model = load_cost_model()
    for ring, by_depth in model.prices.items():
        for depth, by_level in by_depth.items():
            for level, row in by_level.items():
                assert row["mul_plain_cached"] < row["mul_plain"] and row["add_plain_cached"] < row["add_plain"]
