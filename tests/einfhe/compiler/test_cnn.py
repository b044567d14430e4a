"""Convolutions, folded BatchNorm and average pooling as linear layers: against torch's own layers, and compiled
into an encrypted plan (simulated) with a residual block and a strided layer, against the same torch model."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler.cnn import avg_pool2d, conv2d, conv_output_shape, fold_batchnorm
from einfhe.compiler.model import Linear, Residual, Square, compile_model

torch = pytest.importorskip("torch")  # imported after einfhe (openfhe first)
F = torch.nn.functional


def _apply(layer: Linear, x: np.ndarray) -> np.ndarray:
    out = x.reshape(x.shape[0], -1) @ layer.weight.T
    return out + layer.bias if layer.bias is not None else out


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (2, 2, 0), (3, 1, 0)])
def test_conv2d_matches_torch(kernel, stride, padding):
    rng = np.random.default_rng(kernel * 10 + stride)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, kernel, kernel)), rng.standard_normal(4)
    layer = conv2d(w, b, (3, 7, 6), stride, padding)
    expected = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=stride, padding=padding).numpy()
    assert expected.shape[1:] == conv_output_shape((3, 7, 6), 4, kernel, stride, padding)
    np.testing.assert_allclose(_apply(layer, x), expected.reshape(2, -1), rtol=1e-12, atol=1e-12)


def test_batchnorm_folds_into_the_convolution_and_pooling_averages():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    gamma, beta = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    folded = fold_batchnorm(conv2d(w, None, (2, 6, 6), 1, 1), gamma, beta, mean, var)
    t = F.conv2d(torch.tensor(x), torch.tensor(w), padding=1)
    t = F.batch_norm(t, torch.tensor(mean), torch.tensor(var), torch.tensor(gamma), torch.tensor(beta), eps=1e-5)
    np.testing.assert_allclose(_apply(folded, x), t.numpy().reshape(2, -1), rtol=1e-12, atol=1e-12)
    pooled = avg_pool2d((3, 6, 6), 2)
    np.testing.assert_allclose(_apply(pooled, t.numpy()), F.avg_pool2d(t, 2).numpy().reshape(2, -1), atol=1e-12)
    with pytest.raises(einfhe.ModelError, match="does not divide"):
        fold_batchnorm(folded, *(np.ones(5),) * 4)  # 108 outputs are not 5 channels
    with pytest.raises(einfhe.ModelError, match="does not fit"):
        conv2d(w, None, (2, 2, 2), 1, 0)


def test_a_small_resnet_compiles_and_matches_torch():
    """conv3x3 + BN, square, a residual block of conv3x3 + BN and square, a strided conv, global average pool and
    a fully connected head: simulated encrypted plan against the torch model in float64."""
    rng = np.random.default_rng(5)
    w1, w2, w3 = (rng.uniform(-0.3, 0.3, s) for s in ((4, 1, 3, 3), (4, 4, 3, 3), (4, 4, 3, 3)))
    bn = [(rng.uniform(0.8, 1.2, 4), rng.uniform(-0.1, 0.1, 4), rng.uniform(-0.1, 0.1, 4), rng.uniform(0.8, 1.2, 4))
          for _ in range(2)]
    fc = rng.uniform(-0.5, 0.5, (3, 4))
    layers = [fold_batchnorm(conv2d(w1, None, (1, 6, 6), 1, 1), *bn[0]), Square(),
              Residual((fold_batchnorm(conv2d(w2, None, (4, 6, 6), 1, 1), *bn[1]), Square())),
              conv2d(w3, None, (4, 6, 6), 2, 1), avg_pool2d((4, 3, 3), 3), Linear(fc)]
    model = compile_model(layers, 36, batch=8, slots=8)
    x = rng.uniform(-1, 1, (8, 1, 6, 6))
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(x.reshape(8, -1)), *model.plains))

    def bn_torch(t, params):
        gamma, beta, mean, var = (torch.tensor(v) for v in params)
        return F.batch_norm(t, mean, var, gamma, beta, eps=1e-5)

    t = bn_torch(F.conv2d(torch.tensor(x), torch.tensor(w1), padding=1), bn[0]) ** 2
    t = t + bn_torch(F.conv2d(t, torch.tensor(w2), padding=1), bn[1]) ** 2
    t = F.avg_pool2d(F.conv2d(t, torch.tensor(w3), stride=2, padding=1), 3).flatten(1)
    np.testing.assert_allclose(got, (t @ torch.tensor(fc).T).numpy(), rtol=1e-9, atol=1e-9)
    assert model.plan.op_counts()["rotate"] == 0
