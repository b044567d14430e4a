"""Property tests: random einsum specs and shapes, compiled and run on the slot simulator, equal numpy.einsum.

The simulator computes in float64 with exact rotation semantics, so the only admissible difference from
numpy.einsum is float rounding of differently ordered sums: a relative 1e-9 is many orders above that.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einfhe
from einfhe.compiler.strategies import strategy_names
from einfhe.layout import natural_layout

LETTERS = "abcde"
# these tiny slot counts still ride on 128-bit rings of 2^14 and more, where a few ciphertexts pass the default
# budgets: correctness is checked without budgets, and the budgets with tight ones (a fitting plan or a refusal)
UNBOUNDED = {"key_budget": 1 << 62, "upload_budget": 1 << 62}
TIGHT = {"key_budget": 40 << 20, "upload_budget": 8 << 20}


@st.composite
def einsum_cases(draw, max_operands=3):
    sizes = {c: draw(st.integers(1, 4)) for c in LETTERS}
    n_ops = draw(st.integers(1, max_operands))
    terms, shapes = [], []
    for _ in range(n_ops):
        term = draw(st.lists(st.sampled_from(LETTERS), min_size=0, max_size=3, unique=True))
        if draw(st.booleans()) and term:  # sometimes repeat an index in one operand (diagonal / trace)
            term.append(draw(st.sampled_from(term)))
        shape = [sizes[c] if draw(st.integers(0, 5)) else 1 for c in term]  # sometimes broadcast a size-1 axis
        for position, c in enumerate(term):  # a repeated index has one size within an operand
            shape[position] = shape[term.index(c)]
        terms.append("".join(term))
        shapes.append(tuple(shape))
    used = sorted(set("".join(terms)))
    if draw(st.booleans()):
        spec = ",".join(terms)
    else:
        output = draw(st.permutations(used))[: draw(st.integers(0, len(used)))]
        spec = ",".join(terms) + "->" + "".join(output)
    kinds = draw(st.lists(st.sampled_from(["cipher", "plain", "fixed"]), min_size=n_ops, max_size=n_ops))
    if all(k == "plain" for k in kinds):
        kinds[draw(st.integers(0, n_ops - 1))] = "cipher"
    slots = draw(st.sampled_from([4, 16, 64]))
    seed = draw(st.integers(0, 2**16))
    strategy = draw(st.sampled_from(strategy_names()))
    budget = draw(st.sampled_from([UNBOUNDED, TIGHT]))
    return spec, shapes, kinds, slots, seed, strategy, budget


def _operands(shapes, kinds, slots, rng):
    arrays = [rng.standard_normal(s) for s in shapes]
    ops = []
    for array, kind in zip(arrays, kinds):
        if kind == "plain":
            ops.append(array)
        elif kind == "cipher":
            ops.append(einfhe.cipher(array.shape))
        else:
            ops.append(einfhe.cipher(array.shape, natural_layout(array.shape, slots)))
    return arrays, ops


def _check(spec, shapes, kinds, slots, seed, strategy="auto", budget=UNBOUNDED):
    rng = np.random.default_rng(seed)
    arrays, ops = _operands(shapes, kinds, slots, rng)
    try:
        expected = np.einsum(spec, *arrays)
    except ValueError:
        with pytest.raises(einfhe.EinsumError):
            einfhe.compile(spec, *ops, slots=slots, strategy=strategy, **budget)
        return
    try:
        plan = einfhe.compile(spec, *ops, slots=slots, strategy=strategy, **budget)
    except einfhe.PlanError as exc:  # only a budget may refuse: then it says what to raise
        assert budget is TIGHT and "fits the budget: raise" in str(exc), exc
        return
    estimate = plan.estimate()
    assert estimate.key_bytes <= budget["key_budget"] and estimate.upload_bytes <= budget["upload_budget"]
    got = einfhe.simulate(plan, *arrays)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * (1 + np.abs(expected).max(initial=0)))
    plan_again = einfhe.Plan.from_json(plan.to_json())
    assert plan_again == plan


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(einsum_cases())
def test_random_einsums_match_numpy(case):
    _check(*case)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(einsum_cases(max_operands=4))
def test_random_chains_of_four_match_numpy(case):
    _check(*case)


FIXED = [
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij->i", [(3, 4)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("i,i->", [(5,), (5,)]),
    ("ij,j->i", [(3, 5), (5,)]),
    ("ik,kj->ij", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 3)]),
    ("ii->", [(4, 4)]),
    ("ii->i", [(4, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 2)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
]


@pytest.mark.parametrize("spec, shapes", FIXED)
@pytest.mark.parametrize("slots", [8, 256])
@pytest.mark.parametrize("mode", ["cipher-plain", "all-cipher", "all-fixed"])
def test_fixed_list_matches_numpy(spec, shapes, slots, mode):
    kinds = {
        "cipher-plain": ["cipher"] + ["plain"] * (len(shapes) - 1),
        "all-cipher": ["cipher"] * len(shapes),
        "all-fixed": ["fixed"] * len(shapes),
    }[mode]
    _check(spec, shapes, kinds, slots, seed=len(spec) + slots)


def test_multi_ciphertext_operand_is_tiled():
    rng = np.random.default_rng(0)
    W, x = rng.standard_normal((24, 40)), rng.standard_normal(40)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher(x.shape), slots=64, strategy="iteration-space")
    assert plan.input_layout(1).num_cts >= 3
    np.testing.assert_allclose(einfhe.simulate(plan, W, x), W @ x, rtol=1e-12, atol=1e-12)


def test_plain_only_einsum_is_refused():
    with pytest.raises(einfhe.EinsumError, match="no operand is encrypted"):
        einfhe.compile("ij->ji", np.ones((2, 2)))


def test_too_large_is_refused_with_advice():
    with pytest.raises(einfhe.PlanError, match="raise max_cts"):
        einfhe.compile("ij,jk->ik", einfhe.cipher((64, 64)), np.ones((64, 64)), slots=16, max_cts=8)
