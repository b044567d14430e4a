"""QuantLinear against an independent numpy round-to-nearest, and its W4A4 outlier handling."""

import numpy as np
import pytest
import torch
from torch import nn

from quant import W4A4, W4A8, W4A16, ConfigError, KV4, QuantLinear, ShapeError


def _naive_w4a16(w: np.ndarray, gs: int) -> np.ndarray:
    """Group-wise asymmetric int4 written as plain loops (the schema in words, not the library's code)."""
    out = np.empty_like(w)
    for n in range(w.shape[0]):
        for start in range(0, w.shape[1], gs):
            block = w[n, start:start + gs]
            lo, hi = min(block.min(), 0.0), max(block.max(), 0.0)
            s = np.float32(np.float16(max((hi - lo) / np.float32(15), 1e-6)))
            z = np.clip(np.round(-lo / s), 0, 15)
            q = np.clip(np.round(block / s) + z, 0, 15)
            out[n, start:start + gs] = (q - z) * s
    return out


def test_w4a16_forward_matches_naive_rtn(rng):
    lin = nn.Linear(192, 40)
    x = torch.randn(3, 5, 192, generator=rng)
    layer = QuantLinear.from_linear(lin, W4A16(group_size=64))
    w = _naive_w4a16(lin.weight.detach().numpy(), 64)
    expected = x.numpy() @ w.T + lin.bias.detach().numpy()
    assert layer(x).shape == (3, 5, 40)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config, tol", [(W4A16(32), 0.12), (W4A8(32), 0.12), (W4A4(32, outliers=8), 0.25)])
def test_every_format_approximates_the_float_layer(config, tol, rng):
    lin = nn.Linear(300, 64)
    x = torch.randn(50, 300, generator=rng)
    y = QuantLinear.from_linear(lin, config)(x)
    ref = lin(x).detach()
    assert float((y - ref).norm() / ref.norm()) < tol


def test_w4a4_outlier_channels_rescue_a_huge_activation(rng):
    lin = nn.Linear(256, 32, bias=False)
    x = torch.randn(64, 256, generator=rng)
    x[:, 17] *= 200.0
    absmax = x.abs().amax(dim=0)
    ref = lin(x).detach()
    err = {}
    for outliers in (0, 4):
        layer = QuantLinear.from_linear(lin, W4A4(64, outliers=outliers), act_absmax=absmax)
        err[outliers] = float((layer(x) - ref).norm() / ref.norm())
        if outliers:
            assert 17 in layer.outlier_idx.tolist()
    assert err[4] < 0.5 * err[0]


def test_bad_inputs_raise_quant_errors():
    with pytest.raises(ConfigError):
        QuantLinear(8, 8, KV4())
    layer = QuantLinear(8, 4, W4A16(32))
    with pytest.raises(ShapeError, match="in_features"):
        layer(torch.zeros(2, 9))
    with pytest.raises(ShapeError, match="smooth"):
        QuantLinear.from_linear(nn.Linear(8, 4), W4A16(32), smooth=-torch.ones(8))


def test_weight_is_the_dequantized_view_the_layer_applies(rng):
    lin = nn.Linear(192, 40)
    layer = QuantLinear.from_linear(lin, W4A16(group_size=64))
    np.testing.assert_allclose(layer.weight.numpy(), _naive_w4a16(lin.weight.detach().numpy(), 64), rtol=0, atol=1e-6)
    x = torch.randn(7, 192, generator=rng)
    np.testing.assert_allclose(layer(x).detach().numpy(), (x @ layer.weight.T + lin.bias).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [W4A16(32), W4A8(32), W4A4(32, outliers=8)])
def test_weight_view_undoes_smoothing_and_keeps_outliers(config, rng):
    lin = nn.Linear(96, 24)
    smooth = torch.rand(96, generator=rng) * 3 + 0.2
    layer = QuantLinear.from_linear(lin, config, smooth=smooth, act_absmax=torch.rand(96, generator=rng))
    w = lin.weight.detach()
    assert layer.weight.shape == (24, 96)
    # every element is within one quantization step of its group (scale <= 2 absmax / 15), undone by 1/s
    step = (w * smooth).abs().amax(dim=1, keepdim=True) * 2 / 15 / smooth
    assert torch.all((layer.weight - w).abs() <= step + 1e-6)
    if isinstance(config, W4A4):  # outlier channels are int8 (127 levels), much closer than int4
        idx = layer.outlier_idx
        int8_step = (w[:, idx] * smooth[idx]).abs().amax(dim=1, keepdim=True) / 127 / smooth[idx]
        assert torch.all((layer.weight[:, idx] - w[:, idx]).abs() <= int8_step / 2 + 1e-6)
