"""compile(..., rescale="late"): a contraction's rotations run before its rescale, with the same results."""

import statistics

import numpy as np
import pytest

import einfhe
from einfhe.params import Parameters, error_bound
from einfhe.plan import Rescale, Rotate

RNG = np.random.default_rng(23)

CASES = [
    ("ij,j->i", [(64, 64), (64,)], [False, True], 4096),  # iteration space
    ("ij,j->i", [(1024, 1024), (1024,)], [False, True], 4096),  # BSGS, giant steps
    ("ij,jk->ik", [(16, 16), (16, 16)], [True, True], 4096),
    ("bij,bjk->bik", [(4, 16, 16), (4, 16, 16)], [True, True], 4096),  # sums across ciphertexts
    ("ij->i", [(64, 64)], [True], 4096),  # no product: nothing to rescale
]


def _plans(spec, shapes, cipher, slots, arrays):
    operands = [einfhe.cipher(a.shape) if c else a for a, c in zip(arrays, cipher)]
    return {r: einfhe.compile(spec, *operands, slots=slots, rescale=r) for r in ("early", "late")}


def _run(ctx, plan, arrays, cipher):
    inputs = [einfhe.encrypt(ctx, a, plan.input_layout(i)) if c else a for i, (a, c) in enumerate(zip(arrays, cipher))]
    return einfhe.decrypt(ctx, einfhe.run(ctx, plan, *inputs))


@pytest.mark.parametrize("spec, shapes, cipher, slots", CASES)
def test_late_plans_compute_the_einsum_and_rotate_before_every_rescale(spec, shapes, cipher, slots):
    arrays = [RNG.uniform(-1, 1, s) for s in shapes]
    plans = _plans(spec, shapes, cipher, slots, arrays)
    late = plans["late"]
    assert late.depth == plans["early"].depth
    ctx = einfhe.Context.for_plan(late, backend="simulator")
    np.testing.assert_allclose(_run(ctx, late, arrays, cipher), np.einsum(spec, *arrays), atol=1e-9)
    rescaled = {s.out for s in late.steps if isinstance(s, Rescale)}
    last_rotation = max((k for k, s in enumerate(late.steps) if isinstance(s, Rotate)), default=-1)
    first_rescale = min((k for k, s in enumerate(late.steps) if isinstance(s, Rescale)), default=len(late.steps))
    assert last_rotation < first_rescale  # a single product level: every rotation comes before the rescales
    assert not any(isinstance(s, Rotate) and s.src in rescaled for s in late.steps)


def test_an_unknown_rescale_placement_is_refused_with_the_valid_ones():
    with pytest.raises(einfhe.EinsumError, match="valid placements: early, late"):
        einfhe.compile("ij,j->i", np.ones((8, 8)), einfhe.cipher((8,)), rescale="lazy")


@pytest.mark.fhe
def test_late_rescale_takes_the_rotations_key_switching_error_out():
    """32x32 matvec, three key sets each: the late plan's error stays within the bound without key switches
    and its median is below the early plan's (whose rotations add key-switching error at the rescaled scale)."""
    W, x = RNG.uniform(-1, 1, (32, 32)), RNG.uniform(-1, 1, 32)
    plans = _plans("ij,j->i", None, [False, True], 1024, [W, x])
    errors = {}
    for name, plan in plans.items():
        params = Parameters.insecure_for_tests(plan.depth, plan.slots)
        errors[name] = []
        for _ in range(3):
            ctx = einfhe.Context.for_plan(plan, params=params)
            errors[name].append(np.abs(_run(ctx, plan, [W, x], [False, True]) - W @ x).max())
    assert max(errors["late"]) < error_bound(params, 1.0, terms=32, depth=1, keyswitches=0)
    assert statistics.median(errors["late"]) < statistics.median(errors["early"])


@pytest.mark.parametrize("batch", [None, 1])
def test_a_late_one_sample_program_computes_the_mlp_and_never_rotates_a_rescaled_product(batch):
    W1, b1, W2, b2 = RNG.normal(size=(16, 32)), RNG.normal(size=16), RNG.normal(size=(4, 16)), RNG.normal(size=4)
    x = RNG.uniform(-1, 1, (1, 32)) if batch else RNG.uniform(-1, 1, 32)
    layers = [einfhe.Linear(W1, b1), einfhe.Square(), einfhe.Linear(W2, b2)]
    model = einfhe.compile_model(layers, 32, batch=batch, slots=2048, rescale="late")
    ctx = einfhe.Context.for_plan(model.plan, backend="simulator")
    out = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(
        einfhe.encrypt(ctx, model.pack_input(x), model.input_layout)))))
    expected = W2 @ (W1 @ x.reshape(32) + b1) ** 2 + b2
    np.testing.assert_allclose(out, expected.reshape(out.shape), rtol=1e-9, atol=1e-9)
    rescaled = {s.out for s in model.plan.steps if isinstance(s, Rescale)}
    assert not any(isinstance(s, Rotate) and s.src in rescaled for s in model.plan.steps)
    with pytest.raises(einfhe.ModelError, match="valid placements: early, late"):
        einfhe.compile_model(layers, 32, batch=batch, rescale="soon")
