"""W8A8 (W8A8Linear) against an independent numpy round-to-nearest, and LLM.int8()'s outlier decomposition."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from quant import W4A16, W8A8, ConfigError, W8A8Linear, load_quantized, quantize_, save_quantized


def _naive_w8a8(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-token int8 activations times per-channel int8 weights, written out in numpy."""
    xs = np.maximum(np.abs(x).max(axis=1, keepdims=True) / 127, 1e-8)
    ws = np.maximum(np.abs(w).max(axis=1, keepdims=True) / 127, 1e-8)
    return (np.round(x / xs) * xs) @ (np.round(w / ws) * ws).T


def test_w8a8_forward_matches_naive_numpy(rng):
    lin = nn.Linear(100, 30)
    x = torch.randn(2, 6, 100, generator=rng)
    quantize_(model := nn.Sequential(lin), W8A8())
    layer = model[0]
    assert isinstance(layer, W8A8Linear) and layer.w8.shape == (30, 100)  # [N, K]: no padding of K
    expected = _naive_w8a8(x.reshape(-1, 100).numpy().astype(np.float64), lin.weight.detach().numpy().astype(np.float64))
    np.testing.assert_allclose(layer(x).reshape(-1, 30).detach().numpy(), expected + lin.bias.detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    w = lin.weight.detach()
    assert torch.all((layer.weight - w).abs() <= w.abs().amax(dim=1, keepdim=True) / 254 + 1e-7)


def test_llm_int8_keeps_outlier_columns_in_16_bits(rng):
    lin = nn.Linear(128, 32, bias=False)
    x = torch.randn(64, 128, generator=rng)
    x[:, 5] *= 100.0  # an LLM.int8() outlier dimension: |x| >> 6
    ref = lin(x).detach()
    plain = W8A8Linear.from_linear(lin, W8A8())
    decomposed = W8A8Linear.from_linear(lin, W8A8(), recipe="llm.int8")
    err_plain = float((plain(x) - ref).norm() / ref.norm())
    err_dec = float((decomposed(x) - ref).norm() / ref.norm())
    assert err_dec < 0.25 * err_plain
    # the outlier column's product is 16-bit activations times the int8 weight column: recompute it so
    x16 = x[:, 5:6].half().float()
    rest = x.clone()
    rest[:, 5] = 0
    expected = plain(rest) + x16 @ decomposed.weight[:, 5:6].half().float().T
    assert torch.allclose(decomposed(x), expected, rtol=1e-5, atol=1e-5)
    small = torch.randn(4, 128, generator=rng).clamp(-5, 5)  # no column reaches 6: plain W8A8
    assert torch.equal(decomposed(small), plain(small))


def test_llm_int8_is_for_w8a8_only_and_needs_no_calibration():
    with pytest.raises(ConfigError, match="llm.int8"):
        quantize_(nn.Sequential(nn.Linear(64, 8)), W4A16(32), recipe="LLM.int8")
    model = quantize_(nn.Sequential(nn.Linear(64, 8)), W8A8(), recipe="LLM.int8")
    assert model[0].recipe == "llm.int8" and float(model[0].threshold) == 6.0


@pytest.mark.parametrize("recipe", ["smoothquant", "llm.int8"])
def test_w8a8_round_trips_through_save_and_load(recipe, tmp_path, rng):
    x = torch.randn(20, 64, generator=rng) * torch.linspace(0.1, 9, 64)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
    quantize_(model, W8A8(), calibration=[x], recipe=recipe)
    save_quantized(model, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["layers"]["0"]["recipe"] == recipe
    loaded = load_quantized(nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)), tmp_path)
    assert isinstance(loaded[2], W8A8Linear) and torch.equal(loaded(x), model(x))
