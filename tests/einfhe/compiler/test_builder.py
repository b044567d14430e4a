"""PlanBuilder: the steps it emits, run on the exact simulator, compute what each method promises (numpy is the
reference): reductions, relayouts, integer combinations, weighted sums, the iteration-space product, and
checkpoint/rollback forgets exactly what came after the mark."""

import numpy as np
import pytest

from einfhe import Dim, Layout, PlanError, natural_layout
from einfhe.backends.simulator import SimulatorBackend
from einfhe.compiler import Packed, PlanBuilder
from einfhe.plan import CipherInput, PlainInput, PlainTensor, Plan
from einfhe.runtime.interpreter import execute

EXACT = dict(rtol=1e-12, atol=1e-12)


def _run(builder: PlanBuilder, result: Packed, ciphers: dict, plains: dict | None = None):
    """Run the builder's steps as a plan on the simulator: cipher operand k is (layout, array), plain operand k an
    array (named `op<k>` in plaintext references). Return the result tensor, its raw slots and the plan."""
    plains = plains or {}
    operands = [CipherInput(k, layout) for k, (layout, _) in ciphers.items()]
    operands += [PlainInput(k, np.shape(a)) for k, a in plains.items()]
    plan = Plan("builder", builder.slots, tuple(sorted(operands, key=lambda op: op.operand)), (),
                tuple(builder.steps), result.cts, result.layout)
    backend = SimulatorBackend(builder.slots)
    encrypted = {k: [backend.encrypt(row) for row in layout.pack(x)] for k, (layout, x) in ciphers.items()}
    raw = np.stack([backend.decrypt(ct) for ct in execute(plan, backend, encrypted, plains, workers=1)])
    return result.layout.unpack(raw), raw, plan


def _random(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape)


@pytest.mark.parametrize("shape, slots, names", [
    ((3, 4, 5), 64, "j"), ((3, 4, 5), 64, "i"), ((3, 4, 5), 64, "ik"), ((3, 4, 5), 64, "ijk"),
    ((5, 6), 16, "i"), ((5, 6), 16, "j"), ((7,), 8, "i"), ((2, 3, 2), 4, "k"), ((2, 3, 2), 4, "ij"),
])
def test_reduce_sums_out_dimensions_within_and_across_ciphertexts(shape, slots, names):
    """reduce gives x summed over the named axes, whether they lie in the slots, across ciphertexts, or both."""
    x = _random(shape)
    layout = natural_layout(shape, slots, "ijk"[: len(shape)])
    builder = PlanBuilder(slots, max_cts=64)
    result = builder.reduce(builder.load(0, layout), names)
    got, _, plan = _run(builder, result, {0: (layout, x)})
    axes = tuple(layout.indices.index(n) for n in names)
    np.testing.assert_allclose(got, x.sum(axis=axes), **EXACT)
    assert result.layout.indices == "".join(i for i in layout.indices if i not in names)
    assert plan.depth == 0 and plan.op_counts()["mul_plain"] == 0


@pytest.mark.parametrize("name, rounds, kind", [("j", 4, "junk"), ("i", 2, "rep")])
def test_reduce_within_a_ciphertext_takes_log2_rotations(name, rounds, kind):
    """An in-slot axis of size 2^r sums in r rotate-and-add rounds, leaving junk under an axis dim, else copies."""
    x = _random((3, 16), seed=1)
    layout = natural_layout((3, 16), 64, "ij")
    builder = PlanBuilder(64, max_cts=4)
    result = builder.reduce(builder.load(0, layout), name)
    got, raw, plan = _run(builder, result, {0: (layout, x)})
    np.testing.assert_allclose(got, x.sum(axis="ij".index(name)), **EXACT)
    assert plan.op_counts()["rotate"] == rounds and plan.op_counts()["add"] == rounds
    assert [d.kind for d in result.layout.dims] == (["axis", kind] if name == "j" else [kind, "axis"])
    if kind == "rep":  # every copy holds the sum
        np.testing.assert_allclose(raw[0].reshape(4, 16), np.tile(x.sum(axis=0), (4, 1)), **EXACT)


RELAYOUTS = {
    "transpose": (natural_layout((3, 5), 32, "ij"),
                  Layout((Dim("j", 8, "axis", 5), Dim("i", 4, "axis", 3)), 32, "ij", (3, 5))),
    "replicate": (natural_layout((3, 5), 64, "ij"),
                  Layout((Dim("i", 4, "axis", 3), Dim("r", 2, "rep"), Dim("j", 8, "axis", 5)), 64, "ij", (3, 5))),
    "zero-gap": (natural_layout((3, 5), 64, "ij"),
                 Layout((Dim("z", 2, "zero"), Dim("i", 4, "axis", 3), Dim("j", 8, "axis", 5)), 64, "ij", (3, 5))),
    "tiled-transpose": (natural_layout((6, 5), 16, "ij"),
                        Layout((Dim("j", 8, "axis", 5), Dim("i", 8, "axis", 6)), 16, "ij", (6, 5))),
    "two-copies-to-one": (Layout((Dim("r", 2, "rep"), Dim("i", 4, "axis", 3), Dim("j", 8, "axis", 5)), 32, "ij",
                                 (3, 5)), natural_layout((3, 5), 32, "ij")),
    "one-to-two-copies": (natural_layout((3, 5), 32, "ij"),
                          Layout((Dim("r", 2, "rep"), Dim("j", 8, "axis", 5), Dim("i", 4, "axis", 3)), 32, "ij",
                                 (3, 5))),
}


@pytest.mark.parametrize("case", sorted(RELAYOUTS))
def test_relayout_produces_exactly_the_target_packing_in_one_level(case):
    """relayout moves a value into the target layout: its slots equal target.pack(x), zeros and copies included."""
    source, target = RELAYOUTS[case]
    x = _random(source.shape, seed=2)
    builder = PlanBuilder(source.slots, max_cts=16)
    result = builder.relayout(builder.load(0, source), target)
    got, raw, plan = _run(builder, result, {0: (source, x)})
    np.testing.assert_array_equal(raw, target.pack(x))
    np.testing.assert_array_equal(got, x)
    assert plan.depth == 1 and result.layout == target and len(result.cts) == target.num_cts


def test_a_reduced_value_with_junk_is_relaid_out_clean():
    """After an inner reduction leaves junk, relayout into a natural layout gives the clean packed sum."""
    x = _random((4, 8), seed=3)
    layout = Layout((Dim("j", 8, "axis", 8), Dim("i", 4, "axis", 4)), 32, "ij", (4, 8))
    builder = PlanBuilder(32, max_cts=1)
    reduced = builder.reduce(builder.load(0, layout), "i")
    assert not reduced.layout.clean
    target = natural_layout((8,), 32, "j")
    result = builder.relayout(reduced, target)
    _, raw, _ = _run(builder, result, {0: (layout, x)})
    np.testing.assert_allclose(raw, target.pack(x.sum(axis=0)), **EXACT)


def test_relayout_refuses_another_tensor_or_a_junk_target():
    """relayout only moves a tensor, and only into a layout without junk."""
    builder = PlanBuilder(32, max_cts=4)
    value = builder.load(0, natural_layout((3, 5), 32, "ij"))
    with pytest.raises(PlanError, match="different tensors"):
        builder.relayout(value, natural_layout((5, 3), 32, "ij"))
    junk = Layout((Dim("i", 4, "axis", 3), Dim("_j", 2, "junk"), Dim("j", 8, "axis", 5)), 64, "ij", (3, 5))
    with pytest.raises(PlanError, match="cannot hold junk"):
        PlanBuilder(64, max_cts=4).relayout(Packed(value.cts, natural_layout((3, 5), 64, "ij")), junk)


@pytest.mark.parametrize("weights", [
    [3, -2, 0, 5, 1, -7], [1, 1, 1, 1, 1, 1], [-1, -4, 0, 0, -4, -1], [0, 0, 0, 0, 0, 0], [7, 0, 0, 0, 0, 0],
    [6, 6, -6, 2, 2, -3],
])
def test_int_combination_is_the_integer_weighted_sum_without_a_level(weights):
    """int_combination gives sum(w * x) exactly for small integer weights with additions and subtractions only."""
    n, slots = len(weights), 8
    x = _random((n, slots), seed=4)
    layout = natural_layout((n, slots), slots)
    builder = PlanBuilder(slots, max_cts=8)
    loaded = builder.load(0, layout)  # row k in ciphertext k (6 rows padded to 8)
    out = builder.int_combination(list(loaded.cts[:n]), weights)
    got, _, plan = _run(builder, Packed((out,), natural_layout((slots,), slots)), {0: (layout, x)})
    np.testing.assert_allclose(got, np.asarray(weights, dtype=float) @ x, **EXACT)
    counts = plan.op_counts()
    assert plan.depth == 0 and counts["add"] + counts["sub"] + counts["load"] == len(plan.steps)


@pytest.mark.parametrize("n", [0, 1, 3, 8])
def test_weighted_sum_multiplies_by_plaintexts_and_rescales_once(n):
    """weighted_sum gives sum(x_k * w_k) at one level (one rescale); with no terms, a zero ciphertext."""
    slots = 8
    x, w = _random((max(n, 1), slots), seed=5), _random((max(n, 1), slots), seed=6)
    layout = natural_layout(x.shape, slots)
    builder = PlanBuilder(slots, max_cts=8)
    loaded = builder.load(0, layout)
    refs = [PlainTensor("op1", layout, k) for k in range(n)]
    out = builder.weighted_sum(list(loaded.cts[:n]), refs, zero_like=loaded.cts[0])
    got, _, plan = _run(builder, Packed((out,), natural_layout((slots,), slots)), {0: (layout, x)}, {1: w})
    np.testing.assert_allclose(got, (x[:n] * w[:n]).sum(axis=0), **EXACT)
    assert plan.op_counts()["rescale"] == (1 if n else 0) and plan.depth == (1 if n else 0)


@pytest.mark.parametrize("m, n, slots", [(4, 8, 64), (5, 12, 16), (3, 3, 4)])
def test_joint_layout_product_and_reduction_give_a_matrix_vector_product(m, n, slots):
    """The iteration-space moves (joint layout, restrict, plain_refs, multiply_reduce) compute W @ x, tiled or not."""
    rng = np.random.default_rng(m * n)
    W, x = rng.uniform(-1, 1, (m, n)), rng.uniform(-1, 1, n)
    builder = PlanBuilder(slots, max_cts=64)
    joint = builder.joint_layout("i", "j", {"i": m, "j": n}, None)
    x_layout = builder.restrict(joint, "j", (n,))
    loaded = builder.load(0, x_layout)
    left = [loaded.cts[c] for c in builder.ct_map(joint, x_layout)]
    result = builder.multiply_reduce(left, builder.plain_refs("op1", "ij", (m, n), joint), joint, "j")
    got, _, plan = _run(builder, result, {0: (x_layout, x)}, {1: W})
    np.testing.assert_allclose(got, W @ x, **EXACT)
    assert plan.depth == 1 and result.layout.indices == "i"


def test_square_scale_and_bias_are_slot_wise():
    """square gives x**2 (one level), scale x * s (one level), add_plain x + b (none), add_values their sum."""
    x, s, b = _random((3, 5), seed=7), _random((3, 5), seed=8), _random((3, 5), seed=9)
    layout = natural_layout((3, 5), 16, "ij")
    builder = PlanBuilder(16, max_cts=4)
    value = builder.load(0, layout)
    result = builder.add_values(builder.square(value), builder.add_plain(builder.scale(value, "op1"), "op2"))
    got, _, plan = _run(builder, result, {0: (layout, x)}, {1: s, 2: b})
    np.testing.assert_allclose(got, x**2 + (x * s + b), **EXACT)
    assert plan.depth == 1


def test_sum_values_is_a_balanced_tree_of_additions():
    """sum_values adds n ciphertexts with n - 1 additions, in ceil(log2 n) rounds."""
    x = _random((5, 8), seed=10)
    layout = natural_layout((5, 8), 8)
    builder = PlanBuilder(8, max_cts=8)
    loaded = builder.load(0, layout)  # row k in ciphertext k (5 rows padded to 8)
    out = builder.sum_values(list(loaded.cts[:5]))
    got, _, plan = _run(builder, Packed((out,), natural_layout((8,), 8)), {0: (layout, x)})
    np.testing.assert_allclose(got, x.sum(axis=0), **EXACT)
    adds = [s for s in plan.steps if s.op == "add"]
    assert len(adds) == 4
    rounds = {v: 0 for v in loaded.cts}
    for step in adds:
        rounds[step.out] = 1 + max(rounds[step.a], rounds[step.b])
    assert rounds[out] == 3


def test_rollback_forgets_everything_after_the_checkpoint():
    """After rollback the steps, value ids and dimension names continue from the mark, and the plan still runs."""
    x = _random((4, 8), seed=11)
    layout = natural_layout((4, 8), 32, "ij")
    builder = PlanBuilder(32, max_cts=1)
    value = builder.load(0, layout)
    mark = builder.checkpoint()
    steps_before, name_before = list(builder.steps), builder.fresh_dim_name()
    builder.rollback(mark)
    transposed = Layout((Dim("j", 8, "axis", 8), Dim("i", 4, "axis", 4)), 32, "ij", (4, 8))
    builder.reduce(builder.relayout(value, transposed), "i")
    assert len(builder.steps) > len(steps_before)
    builder.rollback(mark)
    assert builder.steps == steps_before and builder.checkpoint() == mark
    assert builder.fresh_dim_name() == name_before
    builder.rollback(mark)
    result = builder.reduce(value, "j")
    assert result.cts == (mark[1] + 5,)  # numbering resumes at the mark: 3 rounds of rotate and add
    got, _, plan = _run(builder, result, {0: (layout, x)})
    assert len(plan.steps) == 1 + 6
    np.testing.assert_allclose(got, x.sum(axis=1), **EXACT)


def test_a_value_past_the_ciphertext_limit_is_refused_with_advice():
    """Loading a layout of more ciphertexts than max_cts raises a PlanError that says what to do."""
    builder = PlanBuilder(8, max_cts=2)
    with pytest.raises(PlanError, match="more than the limit of 2: use more slots"):
        builder.load(0, natural_layout((3, 8), 8))
