"""compile_model's batch choice: batch=1 is the one-sample program, and a batch too small to pay warns."""

import warnings

import numpy as np
import pytest

import einfhe
from einfhe.compiler.model import Linear, SmallBatchWarning, Square, compile_model
from einfhe.plan.cost import estimate_plan


def _mlp(rng):
    W1, b1 = rng.uniform(-0.3, 0.3, (32, 64)), rng.uniform(-0.3, 0.3, 32)
    W2, b2 = rng.uniform(-0.3, 0.3, (10, 32)), rng.uniform(-0.3, 0.3, 10)
    return [Linear(W1, b1), Square(), Linear(W2, b2)], lambda X: ((X @ W1.T + b1) ** 2) @ W2.T + b2


def test_batch_of_one_is_the_one_sample_program():
    rng = np.random.default_rng(0)
    layers, reference = _mlp(rng)
    one = compile_model(layers, 64, batch=1)
    single = compile_model(layers, 64)
    assert one.plan == single.plan and not one.batched and one.plan.cts_in == 1
    X = rng.uniform(0, 1, (1, 64))
    got = one.unpack_output(einfhe.simulate(one.plan, one.pack_input(X), *one.plains))
    assert got.shape == (1, 10)
    np.testing.assert_allclose(got, reference(X), rtol=1e-12, atol=1e-12)
    with pytest.raises(einfhe.ModelError, match="one sample"):
        one.pack_input(np.ones((2, 64)))


def _cost(plan) -> float:
    estimate = estimate_plan(plan)
    return estimate.seconds + estimate.encrypt_seconds


@pytest.mark.parametrize("batch", [2, 8, 64, 4096])
def test_a_batch_warns_exactly_when_one_by_one_is_estimated_cheaper(batch):
    layers, _ = _mlp(np.random.default_rng(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = compile_model(layers, 64, batch=batch)
    single = compile_model(layers, 64)
    cheaper_alone = batch * _cost(single.plan) < _cost(model.plan)
    assert model.batched
    assert any(issubclass(w.category, SmallBatchWarning) for w in caught) == cheaper_alone
    if batch == 2:
        assert cheaper_alone  # two samples never pay for 64 ciphertexts
