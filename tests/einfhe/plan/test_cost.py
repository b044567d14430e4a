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
    assert plan.estimate(ctx.params).key_bytes == estimate.key_bytes


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
