"""What numpy.einsum accepts and einfhe answers differently: zero-size axes (numpy's result, computed without
encryption), the interleaved form, complex operands and a plain-first path without plain operands (typed errors)."""

import numpy as np
import pytest

import einfhe
from einfhe import EinsumError

W = np.arange(12.0).reshape(3, 4)


@pytest.fixture(scope="module")
def ctx():
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((4,)), slots=16)
    return einfhe.Context.for_plan(plan, backend="simulator")


@pytest.mark.parametrize("spec, plain_shape, cipher_shape", [
    ("ij,j->i", (0, 4), (4,)),         # empty output
    ("ij,j->i", (3, 0), (1,)),         # summed index of size 0, broadcast from 1: zeros
    ("ij,jk->ik", (3, 0), (1, 2)),
    ("ij,jk->kij", (3, 0), (1, 2)),
])
def test_zero_size_index_gives_numpys_result_without_a_plan(ctx, spec, plain_shape, cipher_shape):
    rng = np.random.default_rng(0)
    plain, clear = rng.standard_normal(plain_shape), rng.standard_normal(cipher_shape)
    slots_layout = einfhe.natural_layout(clear.shape, ctx.slots)
    result = einfhe.einsum(spec, plain, einfhe.encrypt(ctx, clear, slots_layout), ctx=ctx)
    expected = np.einsum(spec, plain, clear)
    assert isinstance(result, np.ndarray) and result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)
    with pytest.raises(EinsumError, match="size 0"):
        einfhe.compile(spec, plain, einfhe.cipher(cipher_shape), slots=16)


@pytest.mark.parametrize("call", [
    lambda: einfhe.compile(W, [0, 1], einfhe.cipher((4,)), [1]),
    lambda: einfhe.parse_einsum(W, [0, 1]),
])
def test_interleaved_form_is_refused_briefly(call):
    with pytest.raises(EinsumError, match="use the string form") as info:
        call()
    assert "[" not in str(info.value) or "[axes]" in str(info.value)
    assert len(str(info.value)) < 200  # the array is not dumped into the message


def test_interleaved_form_through_einsum(ctx):
    with pytest.raises(EinsumError, match="use the string form"):
        einfhe.einsum(W, [0, 1], np.ones(4), [1], ctx=ctx)


def test_complex_plain_operand_is_refused_at_compile_and_run():
    with pytest.raises(EinsumError, match="complex") as info:
        einfhe.compile("ij,j->i", W + 1j, einfhe.cipher((4,)), slots=16)
    assert info.value.context["operand"] == 0
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((4,)), slots=16)
    with pytest.raises(EinsumError, match="complex"):
        einfhe.simulate(plan, W + 1j, np.ones(4))
    with pytest.raises(EinsumError, match="complex"):
        einfhe.simulate(plan, W, np.ones(4) * 1j)


def test_complex_cipher_operand_is_refused_at_encrypt(ctx):
    with pytest.raises(EinsumError, match="complex"):
        einfhe.encrypt(ctx, np.ones(4) + 2j)


def test_plain_first_without_two_plain_operands_is_a_typed_error():
    with pytest.raises(EinsumError, match="two or more"):
        einfhe.compile("ij,j->i", W, einfhe.cipher((4,)), optimize="plain-first", slots=16)
    plan = einfhe.compile("ij,jk,k->i", W, np.ones((4, 2)), einfhe.cipher((2,)), optimize="plain-first", slots=16)
    x = np.arange(2.0)
    np.testing.assert_allclose(einfhe.simulate(plan, W, np.ones((4, 2)), x), W @ np.ones((4, 2)) @ x)
