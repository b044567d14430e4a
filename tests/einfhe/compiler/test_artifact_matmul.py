"""Products of two encrypted activations from quant's model artifact: the branches meet, a `MatMul` multiplies them
cipher x cipher, and the encrypted program computes what the artifact computes in torch."""

import numpy as np
import pytest
import torch
from torch import nn

import einfhe
import quant
from einfhe.compiler import MatMul, Reorder, Residual, load_artifact_model
from einfhe.compiler.model import compile_model
from einfhe.params.precision import error_bound

TOKENS, WIDTH, BATCH = 4, 8, 16


class _Mixer(nn.Module):
    """Attention without its softmax: token scores q k^T scaled, mixing the values, added back to the input."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(TOKENS * WIDTH, 3)

    def forward(self, x):
        scores = self.q(x) @ self.k(x).transpose(1, 2) * 0.25
        return self.head((x + scores @ self.v(x)).flatten(1))


@pytest.fixture(scope="module")
def mixer(tmp_path_factory):
    """The mixer exported (linear layers as W8A16), its artifact's output in torch on a batch, and the largest
    value any of its products or sums holds on that batch."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("mixer")
    X = torch.rand(BATCH, TOKENS, WIDTH) * 2 - 1
    net = _Mixer()
    quant.export(net, X, directory)
    with torch.no_grad():
        plain = quant.load_artifact(directory)(X).double().numpy()
        q, k, v = net.q(X), net.k(X), net.v(X)
        scores = q @ k.transpose(1, 2) * 0.25
        largest = max(float(t.abs().max()) for t in (X, q, k, v, scores, scores @ v))
    return directory, X.double().numpy().reshape(BATCH, -1), plain, largest


def test_the_attention_product_is_a_matmul_of_branches_inside_a_residual(mixer):
    layers, n_features = load_artifact_model(mixer[0])
    assert n_features == TOKENS * WIDTH
    residual = layers[0]
    assert isinstance(residual, Residual)
    outer = residual.layers[0]
    assert isinstance(outer, MatMul) and outer.left_shape == (TOKENS, TOKENS) and outer.right_shape == (TOKENS, WIDTH)
    scores = outer.left[0]
    assert isinstance(scores, MatMul) and isinstance(scores.right[-1], Reorder)
    assert scores.left_shape == (TOKENS, WIDTH) and scores.right_shape == (WIDTH, TOKENS)


def test_the_simulator_computes_the_artifact(mixer):
    directory, X, plain, _ = mixer
    layers, n_features = load_artifact_model(directory)
    model = compile_model(layers, n_features, batch=BATCH, slots=BATCH)
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X), *model.plains))
    # torch runs in float32 (eps 6e-8): each output sums 32 terms of the residual, whose products sum 8 and then 4
    # terms of the int8-dequantized linear outputs; 1e-5 of the largest output bounds float32's rounding there
    np.testing.assert_allclose(got, plain, rtol=0, atol=1e-5 * np.abs(plain).max())
    assert model.plan.rotations == ()


@pytest.mark.fhe
def test_openfhe_computes_the_artifact(mixer):
    directory, X, plain, largest = mixer
    layers, n_features = load_artifact_model(directory)
    model = compile_model(layers, n_features, batch=BATCH, slots=BATCH)
    ctx = einfhe.Context.for_plan(model.plan, params=einfhe.Parameters.insecure_for_tests(model.plan.depth, BATCH))
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
    got = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe))))
    # CKKS error on products of values up to `largest`, summed over at most WIDTH terms, at the plan's depth; plus
    # float32's rounding in torch's run (as on the simulator)
    bound = error_bound(ctx.params, largest, WIDTH, model.plan.depth, model.plan.keyswitches)
    assert np.abs(got - plain).max() <= bound + 1e-5 * np.abs(plain).max()
