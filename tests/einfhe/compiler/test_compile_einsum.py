"""compile_einsum: plans for a table of specs, operand kinds, strategies and slot counts compute numpy.einsum on the
exact simulator; a plan describes its operands truthfully; fixed layouts are kept; bad input is refused.

The simulator is float64 with exact rotations, so the only difference from numpy.einsum is the rounding of sums
taken in another order: a relative 1e-9 is far above it."""

import numpy as np
import pytest

import einfhe
from einfhe import Dim, Layout, natural_layout
from einfhe.compiler import compile_einsum
from einfhe.compiler.strategies import strategy_names
from einfhe.plan import CipherInput, PlainInput

SPECS = [
    ("ij,j->i", [(6, 5), (5,)]),
    ("j,ij->i", [(5,), (6, 5)]),
    ("bj,ij->bi", [(3, 5), (4, 5)]),
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 3)]),
    ("i,i->", [(7,), (7,)]),
    ("i,j->ij", [(3,), (5,)]),
    ("ij->ji", [(3, 5)]),
    ("ii->i", [(4, 4)]),
    ("iij->j", [(3, 3, 2)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("ij,j", [(4, 3), (1,)]),
    ("...j,j->...", [(2, 3, 5), (5,)]),
    ("ij,jk,k->i", [(3, 4), (4, 5), (5,)]),
]
KINDS = {
    "first-cipher": lambda n: ["cipher"] + ["plain"] * (n - 1),
    "last-cipher": lambda n: ["plain"] * (n - 1) + ["cipher"],
    "all-cipher": lambda n: ["cipher"] * n,
    "all-encrypted": lambda n: ["fixed"] * n,
}


def _operands(shapes, kinds, slots, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, s) for s in shapes]
    ops = [a if k == "plain" else einfhe.cipher(a.shape, natural_layout(a.shape, slots) if k == "fixed" else None)
           for a, k in zip(arrays, kinds)]
    return arrays, ops


def _close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * (1 + np.abs(expected).max()))


@pytest.mark.parametrize("spec, shapes", SPECS)
@pytest.mark.parametrize("kinds", sorted(KINDS))
@pytest.mark.parametrize("slots", [8, 64])
def test_specs_and_operand_kinds_match_numpy(spec, shapes, kinds, slots):
    """Each spec, with cipher operands first, last, everywhere or already encrypted, equals numpy.einsum."""
    arrays, ops = _operands(shapes, KINDS[kinds](len(shapes)), slots, seed=len(spec) + slots)
    plan = compile_einsum(spec, *ops, slots=slots)
    expected = np.einsum(spec, *arrays)
    got = einfhe.simulate(plan, *arrays)
    assert got.shape == expected.shape == plan.output_layout.shape
    _close(got, expected)


@pytest.mark.parametrize("strategy", strategy_names())
@pytest.mark.parametrize("spec, shapes, cipher", [
    ("ij,j->i", [(12, 9), (9,)], 1), ("bj,ij->bi", [(3, 9), (7, 9)], 0), ("ij,jk->ik", [(3, 8), (8, 6)], 0),
    ("ij,j,i->", [(5, 6), (6,), (5,)], 1), ("ij,jk,k->i", [(4, 6), (6, 5), (5,)], 2),
])
@pytest.mark.parametrize("slots", [16, 256])
def test_every_strategy_matches_numpy_on_plain_times_cipher_specs(strategy, spec, shapes, cipher, slots):
    """Every named strategy (falling back where it does not fit) gives numpy.einsum's result."""
    kinds = ["cipher" if k == cipher else "plain" for k in range(len(shapes))]
    arrays, ops = _operands(shapes, kinds, slots, seed=slots)
    plan = compile_einsum(spec, *ops, slots=slots, strategy=strategy)
    _close(einfhe.simulate(plan, *arrays), np.einsum(spec, *arrays))
    if strategy != "auto":
        assert set(plan.strategy.split("+")) <= {strategy, "iteration-space"}


def test_a_plan_describes_its_operands():
    """Cipher operands get a layout of their own shape, plain ones keep their shape, in the order given."""
    arrays, ops = _operands([(3, 4), (4, 5), (5,)], ["plain", "cipher", "cipher"], 64)
    plan = compile_einsum("ij,jk,k->i", *ops, slots=64)
    assert [type(op) for op in plan.operands] == [PlainInput, CipherInput, CipherInput]
    assert [op.operand for op in plan.operands] == [0, 1, 2]
    assert plan.operands[0].shape == (3, 4)
    assert plan.input_layout(1).shape == (4, 5) and plan.input_layout(2).shape == (5,)
    assert plan.cts_in == plan.input_layout(1).num_cts + plan.input_layout(2).num_cts
    assert plan.spec == "ij,jk,k->i" and plan.slots == 64
    with pytest.raises(einfhe.PlanError, match="operand 0 is not a cipher operand"):
        plan.input_layout(0)


@pytest.mark.parametrize("layout", [
    Layout((Dim("b", 8, "axis", 5), Dim("a", 4, "axis", 3)), 64, "ab", (3, 5)),
    Layout((Dim("r", 2, "rep"), Dim("a", 4, "axis", 3), Dim("b", 8, "axis", 5)), 64, "ab", (3, 5)),
    Layout((Dim("a", 4, "axis", 3), Dim("z", 2, "zero"), Dim("b", 8, "axis", 5)), 64, "ab", (3, 5)),
    natural_layout((3, 5), 16),
])
@pytest.mark.parametrize("spec, other", [("ij,j->i", (5,)), ("ij,jk->ik", (5, 2)), ("ij,i->j", (3,))])
def test_an_encrypted_operand_keeps_its_layout(layout, spec, other):
    """A cipher operand given with a layout (transposed, replicated, gapped, tiled) is used as it is."""
    rng = np.random.default_rng(1)
    x, w = rng.uniform(-1, 1, (3, 5)), rng.uniform(-1, 1, other)
    plan = compile_einsum(spec, einfhe.cipher((3, 5), layout), w, slots=layout.slots)
    assert plan.input_layout(0) == layout
    _close(einfhe.simulate(plan, x, w), np.einsum(spec, x, w))


def test_pow2_rotation_basis_uses_power_of_two_keys_and_keeps_the_result():
    """rotation_basis='pow2' leaves only power-of-two rotation keys and the same result."""
    arrays, ops = _operands([(24, 24), (24,)], ["plain", "cipher"], 128)
    plain = compile_einsum("ij,j->i", *ops, slots=128, strategy="bsgs")
    pow2 = compile_einsum("ij,j->i", *ops, slots=128, strategy="bsgs", rotation_basis="pow2")
    assert all(r & (r - 1) == 0 for r in pow2.rotations)
    assert any(r & (r - 1) for r in plain.rotations) and len(pow2.rotations) <= len(plain.rotations)
    _close(einfhe.simulate(pow2, *arrays), arrays[0] @ arrays[1])


@pytest.mark.parametrize("optimize", ["greedy", "optimal", [(0, 1), (0, 1)], [(1, 2), (0, 1)]])
def test_every_contraction_order_gives_the_same_result(optimize):
    """opt_einsum's optimizers and explicit pairwise paths all compile to plans equal to numpy.einsum."""
    arrays, ops = _operands([(4, 6), (6, 5), (5, 3)], ["cipher", "plain", "plain"], 64)
    plan = compile_einsum("ij,jk,kl->il", *ops, slots=64, optimize=optimize)
    _close(einfhe.simulate(plan, *arrays), arrays[0] @ arrays[1] @ arrays[2])


def test_plain_only_subexpressions_are_evaluated_by_the_plain_program():
    """A contraction of two plain operands becomes a numpy step of the plain program, not ciphertext work."""
    arrays, ops = _operands([(5,), (5, 6), (6, 4)], ["cipher", "plain", "plain"], 64)
    plan = compile_einsum("i,ij,jk->k", *ops, slots=64, optimize=[(1, 2), (0, 1)])
    assert any(set(getattr(e, "args", ())) == {"op1", "op2"} for e in plan.plain_program)
    assert plan.depth == 1
    _close(einfhe.simulate(plan, *arrays), arrays[0] @ arrays[1] @ arrays[2])


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: compile_einsum("ij,j->i", np.ones((2, 3)), np.ones(3)), einfhe.EinsumError, "no operand is encrypted"),
    (lambda: compile_einsum("ij,j->i", einfhe.cipher((2, 3))), einfhe.EinsumError, "names 2 operand"),
    (lambda: compile_einsum("ij,j->i", einfhe.cipher((2, 3)), np.ones(4)), einfhe.EinsumError, "has size 3"),
    (lambda: compile_einsum("ij->k", einfhe.cipher((2, 3))), einfhe.EinsumError, "appear in no operand"),
    (lambda: compile_einsum("i1->i", einfhe.cipher((2, 3))), einfhe.EinsumError, "invalid character"),
    (lambda: compile_einsum("ij->i", einfhe.cipher((2, 3)), slots=12), einfhe.EinsumError, "power of two"),
    (lambda: compile_einsum("ij->i", einfhe.cipher((2, 3)), strategy="fastest"), einfhe.PlanError,
     "unknown strategy 'fastest'"),
    (lambda: compile_einsum("ij->i", einfhe.cipher((2, 3)), rotation_basis="pow3"), einfhe.PlanError,
     "unknown rotation basis 'pow3'"),
    (lambda: compile_einsum("ij->i", einfhe.cipher((2, 3), natural_layout((2, 3), 32)), slots=64),
     einfhe.EinsumError, "has 32 slots but the plan uses 64"),
    (lambda: compile_einsum("ij,jk->ik", einfhe.cipher((64, 64)), np.ones((64, 64)), slots=16, max_cts=4),
     einfhe.PlanError, "more than the limit of 4"),
])
def test_bad_input_is_refused_with_a_typed_error(call, error, fragment):
    """Specs numpy would refuse, plain-only einsums, bad slot counts, strategies, bases and sizes raise typed errors."""
    with pytest.raises(error, match=fragment):
        call()


def test_simulate_checks_the_operand_count():
    """Running a plan with the wrong number of operands is an EinsumError, not a crash."""
    arrays, ops = _operands([(3, 4), (4,)], ["plain", "cipher"], 16)
    plan = compile_einsum("ij,j->i", *ops, slots=16)
    with pytest.raises(einfhe.EinsumError, match="takes 2 operands, got 1"):
        einfhe.simulate(plan, arrays[0])
