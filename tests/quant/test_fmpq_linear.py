"""FMPQ (COMET's fine-grained mixed-precision W4A4) against the float layer, per-token W4A4, and numpy."""

import numpy as np
import pytest
import torch
from torch import nn

from quant import FMPQ, W4A4, CalibrationError, ConfigError, FMPQLinear, load_quantized, quantize_, save_quantized


def _outlier_activations(g: torch.Generator, rows: int) -> torch.Tensor:
    """Activations whose scattered channels are 20-50x larger (the pattern FMPQ's permutation gathers)."""
    x = torch.randn(rows, 256, generator=g)
    x[:, torch.tensor([3, 77, 140, 201, 250])] *= torch.tensor([20.0, 35.0, 50.0, 25.0, 40.0])
    return x


def _error(config, recipe="rtn"):
    g = torch.Generator().manual_seed(11)
    torch.manual_seed(5)
    model, ref = nn.Sequential(nn.Linear(256, 64)), nn.Sequential(nn.Linear(256, 64))
    ref.load_state_dict(model.state_dict())
    calibration, test = _outlier_activations(g, 256), _outlier_activations(g, 256)
    quantize_(model, config, calibration=[calibration], recipe=recipe)
    with torch.no_grad():
        return float((model(test) - ref(test)).norm() / ref(test).norm()), model[0]


def test_fmpq_beats_per_token_w4a4_on_outlier_channels():
    fmpq, layer = _error(FMPQ(group_size=32, a8_fraction=0.125))
    per_token, _ = _error(W4A4(group_size=32, outliers=0))
    assert fmpq < 0.5 * per_token
    assert set(layer.perm[:5].tolist()) == {3, 77, 140, 201, 250}  # gathered into the first (8-bit) group
    assert layer.a8_groups.tolist() == [True] + [False] * 7


def test_fmpq_forward_matches_numpy_on_its_own_weight_view(rng):
    _, layer = _error(FMPQ(group_size=64, a8_fraction=0.25))
    x = _outlier_activations(rng, 5)
    xp = x.numpy()[:, layer.perm.numpy()].astype(np.float64)
    expected = np.zeros((5, 256))
    for g in range(4):  # quantize each 64-channel group of each token; group 0 with 8 bits
        block = xp[:, 64 * g:64 * (g + 1)]
        qmax = 127 if g == 0 else 7
        s = np.maximum(np.abs(block).max(axis=1, keepdims=True) / qmax, 1e-8)
        expected[:, 64 * g:64 * (g + 1)] = np.clip(np.round(block / s), -qmax - 1, qmax) * s
    w = layer.weight.detach().numpy().astype(np.float64)[:, layer.perm.numpy()]
    y = expected @ w.T + layer.bias.numpy()
    np.testing.assert_allclose(layer(x).detach().numpy(), y, rtol=1e-4, atol=1e-4)


def test_fmpq_needs_calibration_and_a_valid_fraction():
    with pytest.raises(CalibrationError, match="calibration"):
        quantize_(nn.Sequential(nn.Linear(64, 8)), FMPQ(32))
    with pytest.raises(ConfigError, match="a8_fraction"):
        FMPQ(32, a8_fraction=1.5)


def test_fmpq_round_trips_through_save_and_load(tmp_path, rng):
    x = _outlier_activations(rng, 30)
    model = nn.Sequential(nn.Linear(256, 16))
    quantize_(model, FMPQ(64), calibration=[x], recipe="smoothquant")
    save_quantized(model, tmp_path)
    loaded = load_quantized(nn.Sequential(nn.Linear(256, 16)), tmp_path)
    assert isinstance(loaded[0], FMPQLinear) and torch.equal(loaded(x), model(x))
