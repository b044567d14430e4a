"""The model compiler's branching layers on the simulator against numpy: products of two encrypted branches
(matmul, elementwise), feature reorders, and the artifact ops that become them."""

import numpy as np
import pytest
import torch
from torch import nn

import einfhe
import quant
from einfhe.compiler import load_artifact_model
from einfhe.compiler.model import IntLinear, Linear, MatMul, Reorder, Square, compile_model

B = 8


def _run(layers, X):
    model = compile_model(layers, X.shape[1], batch=len(X), slots=len(X))
    return model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X), *model.plains)), model


def test_a_matmul_of_branches_with_mixed_deferred_scales():
    rng = np.random.default_rng(1)
    s, d = 3, 4
    q1, s1 = rng.integers(-7, 8, (s * d, s * d)), rng.uniform(0.05, 0.2, s * d)   # a scale per row: mixes along k
    W2 = rng.normal(size=(s * d, s * d))
    transpose = np.arange(s * d).reshape(s, d).T.ravel()
    head = rng.normal(size=(2, s * s))
    layers = [IntLinear(q1, s1), MatMul((), (Linear(W2), Reorder(tuple(transpose))), (s, d), (d, s)), Square(),
              Linear(head)]
    X = rng.uniform(-1, 1, (B, s * d))
    h = X @ (q1 * s1[:, None]).T
    right = (h @ W2.T).reshape(B, s, d).transpose(0, 2, 1)
    expected = ((h.reshape(B, s, d) @ right).reshape(B, -1) ** 2) @ head.T
    got, model = _run(layers, X)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    assert model.plan.rotations == ()


def test_branch_shapes_that_do_not_multiply_are_refused():
    layers = [Linear(np.eye(6)), MatMul((), (), (2, 3), (2, 3))]
    with pytest.raises(einfhe.ModelError, match=r"\(\.\.\., m, k\) by \(\.\.\., k, n\)"):
        _run(layers, np.ones((B, 6)))
    with pytest.raises(einfhe.ModelError, match="batched packing"):
        compile_model([Linear(np.eye(6)), MatMul((), (), (2, 3), (3, 2))], 6)


class _Gated(nn.Module):
    """Elementwise products of branches (one broadcast over the last axis), constants, a transpose and a mean."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.g = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 1)

    def forward(self, x):                       # (B, 3, 6)
        gated = (self.a(x) * self.b(x)) * self.g(x) / 4.0 - 0.5
        return (2.0 - gated.transpose(1, 2)).mean(-1) * 3.0 + 1.0


def test_elementwise_products_constants_and_reductions_from_an_artifact(tmp_path):
    torch.manual_seed(1)
    X = torch.rand(B, 3, 6) * 2 - 1
    quant.export(_Gated(), X, tmp_path)
    with torch.no_grad():
        plain = quant.load_artifact(tmp_path)(X).double().numpy()
    layers, n_features = load_artifact_model(tmp_path)
    got, _ = _run(layers, X.double().numpy().reshape(B, -1))
    # float32 rounding in torch (eps 6e-8) over sums of 6 terms and two products: 1e-5 of the largest output
    np.testing.assert_allclose(got, plain, rtol=0, atol=1e-5 * np.abs(plain).max())


def test_a_layer_too_large_for_a_dense_matrix_is_refused_before_allocating(tmp_path):
    from einfhe.compiler.artifact_ops import MAX_DENSE

    tokens = int(MAX_DENSE ** 0.5) // 8 + 1  # the per-token layer becomes (8 tokens) x (8 tokens) entries
    quant.export(nn.Sequential(nn.Linear(8, 8)), torch.randn(2, tokens, 8), tmp_path)
    with pytest.raises(einfhe.ModelError, match="dense"):
        load_artifact_model(tmp_path)
