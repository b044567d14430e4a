"""A new output index placed in a replicated dimension of the cipher operand: one ciphertext, still exact."""

import numpy as np
import pytest

import einfhe
from einfhe.layout import Dim, Layout, next_pow2
from einfhe.params.precision import error_bound


@pytest.mark.parametrize("k, i, copies, slots", [(10, 32, 64, 2048), (3, 5, 8, 64), (16, 16, 16, 256),
                                                 (5, 12, 4, 1024), (100, 32, 64, 8192)])
def test_output_index_reuses_the_replicas_of_a_fixed_layout(k, i, copies, slots):
    rng = np.random.default_rng(k * i)
    A, x = rng.standard_normal((k, i)), rng.standard_normal(i)
    layout = Layout((Dim("r", copies, "rep"), Dim("i", next_pow2(i), "axis", i)), slots, "i", (i,))
    plan = einfhe.compile("ki,i->k", A, einfhe.cipher((i,), layout=layout), slots=slots)
    np.testing.assert_allclose(einfhe.simulate(plan, A, x), np.einsum("ki,i->k", A, x), rtol=1e-12, atol=1e-12)
    fits = next_pow2(k) <= copies
    # placed in the replicas, k costs nothing; placed outside, it multiplies the block
    block = next_pow2(i) * (copies if fits else copies * next_pow2(k))
    assert plan.output_layout.num_cts == max(1, block // slots)
    assert plan.op_counts()["mul_plain"] == max(1, block // slots)


@pytest.mark.fhe
def test_one_sample_w4a16_mlp_is_one_ciphertext_on_openfhe(tmp_path):
    import torch  # after einfhe (openfhe's libgomp first)
    from torch import nn

    import quant

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), quant.Square(), nn.Linear(32, 10))
    quant.quantize_(net, quant.W4A16(64))
    quant.export_integer_model(net, tmp_path, example_input=torch.rand(16, 64))
    layers, n_features = einfhe.load_integer_model(tmp_path)
    model = einfhe.compile_model(layers, n_features, slots=2048)
    # the hidden vector is replicated 64 times in [rep 64 | 32]: the 10 (16) outputs take 16 of those copies
    assert model.plan.output_layout.num_cts == 1
    counts = model.plan.op_counts()
    assert (counts["mul_plain"], counts["rotate"]) == (2, 11)  # 6 + 5 rotations: log2 of 64 and of 32
    ctx = einfhe.Context.for_plan(model.plan, params=einfhe.Parameters.insecure_for_tests(model.plan.depth, 2048))
    x = np.random.default_rng(0).uniform(0, 1, n_features)
    xe = einfhe.encrypt(ctx, model.pack_input(x), model.input_layout)
    result = einfhe.run(ctx, model.plan, *model.operands(xe))
    assert len(result.cts) == 1
    got = model.unpack_output(einfhe.decrypt(ctx, result))
    with torch.no_grad():
        expected = net(torch.tensor(x[None], dtype=torch.float32)).double().numpy()[0]
    hidden = max(np.abs(layer.q).sum(axis=1).max() for layer in layers if hasattr(layer, "q"))
    bound = error_bound(ctx.params, float(hidden) ** 2, 64 * 32, model.plan.depth, model.plan.keyswitches)
    scale = max(float(np.max(np.abs(layer.scale))) for layer in layers if hasattr(layer, "scale"))
    # the reference runs in float32; CKKS noise on stored integer sums is scaled back by the layers' scales
    assert np.abs(got - expected).max() <= bound * scale ** 3 * 8 + 1e-4 * np.abs(expected).max()
    assert np.abs(expected).max() > 10 * (bound * scale ** 3 * 8)  # the comparison means something
