"""An axis too large for any plan is split into tiles by the compiler: the tiled plan computes numpy's result
on the simulator and on OpenFHE, the client packs and reads back the shapes it named, and the layouts' views
survive JSON; what no single split rescues keeps its refusal."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler.axis_split import tile_candidates
from einfhe.layout import Layout, natural_layout
from einfhe.params.precision import error_bound
from einfhe.spec import parse_einsum


def test_a_cipher_matrix_too_wide_for_the_ring_is_tiled_by_columns():
    """256 x 256 @ cipher 256 x 256 at 2,048 slots needed 8,192 ciphertexts; it compiles as 32 column tiles of 8,
    one ciphertext each, and the simulator gives numpy's product in the user's shapes."""
    rng = np.random.default_rng(0)
    A, B = rng.uniform(-1, 1, (256, 256)), rng.uniform(-1, 1, (256, 256))
    plan = einfhe.compile("ij,jk->ik", A, einfhe.cipher(B.shape), slots=2048)
    assert plan.spec == "ij,jtk->itk" and plan.cts_in == 32
    assert plan.input_layout(1).tensor_shape == (256, 256) and plan.input_layout(1).shape == (256, 32, 8)
    assert plan.output_layout.tensor_shape == (256, 256)
    np.testing.assert_allclose(einfhe.simulate(plan, A, B), A @ B, atol=1e-9)


def test_the_tile_is_the_largest_divisor_that_fits_one_ciphertext():
    """Under 8 rows, 8 slots hold one column of a 12-column batch; 64 slots hold 8 columns of a 24-column one
    (then 6), 32 slots 4 (then 3, padded to 4); a contracted axis is never split."""
    assert tile_candidates(parse_einsum("ij,jk->ik", (8, 8), (8, 12)), [1], 8) == [(1, "k", 1)]
    spec = parse_einsum("ij,jk->ik", (8, 8), (8, 24))
    assert tile_candidates(spec, [1], 64) == [(1, "k", 8), (1, "k", 6)]
    assert tile_candidates(spec, [1], 32) == [(1, "k", 4), (1, "k", 3)]
    assert tile_candidates(parse_einsum("ij,j->i", (8, 8), (8,)), [1], 4) == []


@pytest.mark.fhe
def test_a_tiled_product_on_openfhe_decrypts_to_numpys():
    """16 x 16 @ cipher 16 x 16 at 64 slots with at most 4 ciphertexts: 4 tiles of 4 columns, encrypted from and
    decrypted to 16 x 16, within the parameters' error bound."""
    rng = np.random.default_rng(1)
    A, B = rng.uniform(-1, 1, (16, 16)), rng.uniform(-1, 1, (16, 16))
    plan = einfhe.compile("ij,jk->ik", A, einfhe.cipher(B.shape), slots=64, max_cts=4)
    assert plan.cts_in == 4
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, plan.slots))
    encrypted = einfhe.encrypt(ctx, B, plan.input_layout(1))
    assert encrypted.shape == (16, 16)
    got = einfhe.decrypt(ctx, einfhe.run(ctx, plan, A, encrypted))
    assert got.shape == (16, 16)
    assert np.abs(got - A @ B).max() <= error_bound(ctx.params, 1.0, 16, plan.depth, plan.keyswitches)


def test_a_tiled_plan_keeps_its_views_through_json():
    """The plan's JSON carries the views, so a server running it packs and unpacks the user's shapes."""
    plan = einfhe.compile("ij,jk->ik", np.ones((16, 16)), einfhe.cipher((16, 16)), slots=64, max_cts=4)
    again = einfhe.Plan.from_json(plan.to_json())
    assert again == plan and again.input_layout(1).view == (16, 16) and again.output_layout.view == (16, 16)


def test_a_view_must_reshape_the_layout():
    """A view holding another number of elements, or a tensor of neither shape, is refused with a LayoutError."""
    layout = natural_layout((4, 2), 8)
    data = layout.to_json() | {"view": [3, 3]}
    with pytest.raises(einfhe.LayoutError, match="same number of elements"):
        Layout.from_json(data)
    viewed = Layout.from_json(layout.to_json() | {"view": [8]})
    np.testing.assert_array_equal(viewed.unpack(viewed.pack(np.arange(8.0))), np.arange(8.0))
    with pytest.raises(einfhe.LayoutError, match=r"does not match the layout's shape \(8,\)"):
        viewed.pack(np.zeros((4, 2)))


def test_what_no_single_split_rescues_keeps_its_refusal():
    """A cipher left operand whose rows each need 4 ciphertexts of 16 slots cannot fit 4 by tiling its rows."""
    with pytest.raises(einfhe.PlanError, match="more than the limit of 4.*split the tensor"):
        einfhe.compile("ij,jk->ik", einfhe.cipher((64, 64)), np.ones((64, 64)), slots=16, max_cts=4)
