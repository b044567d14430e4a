"""The issue's fixed list on OpenFHE with a small (insecure, test-only) ring, against numpy.einsum.

The tolerance is `einfhe.params.precision.error_bound`: the fresh-encryption and rescale error bounds of the CKKS
paper, over the scale 2^scale_bits, times the magnitude of the products and the number of terms summed
(a repeated index sums its diagonal through a mask, so it counts as summed too), plus one rescale-sized error
per key switch.
"""

import numpy as np
import pytest

import einfhe
from einfhe.params.precision import error_bound

pytestmark = pytest.mark.fhe

SLOTS = 32
CASES = [
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij->i", [(3, 4)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("i,i->", [(5,), (5,)]),
    ("ij,j->i", [(3, 5), (5,)]),
    ("ik,kj->ij", [(3, 4), (4, 2)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 3)]),
    ("ii->", [(4, 4)]),
    ("ii->i", [(4, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
]


def _run_encrypted(spec, arrays, kinds, slots=SLOTS, strategy="auto"):
    operands = [einfhe.cipher(a.shape) if k == "cipher" else a for a, k in zip(arrays, kinds)]
    plan = einfhe.compile(spec, *operands, slots=slots, strategy=strategy)
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, slots))
    inputs = [
        einfhe.encrypt(ctx, a, plan.input_layout(i)) if k == "cipher" else a
        for i, (a, k) in enumerate(zip(arrays, kinds))
    ]
    return plan, ctx, einfhe.decrypt(ctx, einfhe.run(ctx, plan, *inputs))


def _tolerance(spec, arrays, plan, ctx):
    parsed = einfhe.parse_einsum(spec, *[a.shape for a in arrays])
    sizes = parsed.sizes
    summed = int(np.prod([n for i, n in sizes.items() if i not in parsed.output], dtype=np.int64))
    for term in parsed.inputs:
        summed *= int(np.prod([sizes[i] ** (term.count(i) - 1) for i in set(term)], dtype=np.int64))
    magnitude = float(np.prod([np.abs(a).max() for a in arrays]))
    return error_bound(ctx.params, magnitude, summed, plan.depth, plan.keyswitches)


@pytest.mark.parametrize("spec, shapes", CASES)
@pytest.mark.parametrize("mode", ["cipher-plain", "all-cipher"])
def test_fixed_list_on_openfhe(spec, shapes, mode):
    rng = np.random.default_rng(7)
    arrays = [rng.uniform(-1, 1, s) for s in shapes]
    kinds = ["cipher"] + (["plain"] if mode == "cipher-plain" else ["cipher"]) * (len(shapes) - 1)
    plan, ctx, got = _run_encrypted(spec, arrays, kinds)
    expected = np.einsum(spec, *arrays)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max(initial=0) <= _tolerance(spec, arrays, plan, ctx)


def test_tensor_spanning_several_ciphertexts():
    rng = np.random.default_rng(3)
    W, x = rng.uniform(-1, 1, (6, 20)), rng.uniform(-1, 1, (20,))
    plan, ctx, got = _run_encrypted("ij,j->i", [W, x], ["plain", "cipher"], slots=16, strategy="iteration-space")
    assert plan.input_layout(1).num_cts >= 3
    assert np.abs(got - W @ x).max() <= _tolerance("ij,j->i", [W, x], plan, ctx)


def test_openfhe_generates_exactly_the_plan_rotation_keys():
    W = np.ones((4, 6))
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((6,)), slots=SLOTS)
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, SLOTS))
    assert plan.rotations
    assert ctx.backend.rotation_key_indices() == set(plan.rotations)


def test_missing_rotation_key_is_a_plan_error():
    plan = einfhe.compile("ij->", einfhe.cipher((4, 4)), slots=SLOTS)
    other = einfhe.compile("ij->ji", einfhe.cipher((4, 4)), slots=SLOTS)
    ctx = einfhe.Context.for_plan(other, params=einfhe.Parameters.insecure_for_tests(1, SLOTS))
    xe = einfhe.encrypt(ctx, np.ones((4, 4)), plan.input_layout(0))
    with pytest.raises(einfhe.PlanError, match="no rotation keys"):
        einfhe.run(ctx, plan, xe)


def test_real_128_bit_parameters_end_to_end():
    rng = np.random.default_rng(11)
    W, x = rng.uniform(-1, 1, (16, 16)), rng.uniform(-1, 1, (16,))
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher(x.shape))
    ctx = einfhe.Context.for_plan(plan)
    assert ctx.params.secure and ctx.params.ring_dim >= 16384
    ye = einfhe.einsum("ij,j->i", W, einfhe.encrypt(ctx, x, plan.input_layout(1)), ctx=ctx)
    assert np.abs(einfhe.decrypt(ctx, ye) - W @ x).max() <= error_bound(ctx.params, 1.0, 16, plan.depth, plan.keyswitches)
