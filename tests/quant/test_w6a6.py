"""W6A6 / W6A8 (FlexQ): int6 codes against numpy, the layer-wise A8 choice, and the manifest keeping it."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from quant import W6A6, CalibrationError, W8A8Linear, load_quantized, quantize_, save_quantized


class _TwoBranches(nn.Module):
    """``a`` reads ordinary activations, ``b`` activations with outlier channels (the 6-bit-sensitive one)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 16), nn.Linear(64, 16)

    def forward(self, x):
        return self.a(x[:, :64]) + self.b(x[:, 64:])


def _inputs(g: torch.Generator, rows: int) -> torch.Tensor:
    x = torch.randn(rows, 128, generator=g)
    x[:, 64:68] *= 40.0
    return x


def test_w6a6_matches_naive_numpy(rng):
    lin = nn.Linear(96, 20)
    layer = W8A8Linear.from_linear(lin, W6A6())
    x = torch.randn(9, 96, generator=rng).numpy().astype(np.float64)
    w = lin.weight.detach().numpy().astype(np.float64)
    xs = np.abs(x).max(axis=1, keepdims=True) / 31
    ws = np.abs(w).max(axis=1, keepdims=True) / 31
    expected = (np.clip(np.round(x / xs), -32, 31) * xs) @ (np.round(w / ws) * ws).T + lin.bias.detach().numpy()
    assert int(layer.w8.abs().max()) == 31 and layer.act_bits == 6
    np.testing.assert_allclose(layer(torch.from_numpy(x).float()).detach().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_the_layer_most_sensitive_to_6_bits_keeps_8_bit_activations(rng):
    g = torch.Generator().manual_seed(4)
    model = _TwoBranches()
    quantize_(model, W6A6(a8_fraction=0.5), calibration=[_inputs(g, 128)])
    assert (model.a.act_bits, model.b.act_bits) == (6, 8)
    w6a8 = quantize_(_TwoBranches(), W6A6(a8_fraction=1.0))
    assert (w6a8.a.act_bits, w6a8.b.act_bits) == (8, 8)
    with pytest.raises(CalibrationError, match="A8 layers"):
        quantize_(_TwoBranches(), W6A6(a8_fraction=0.5))


def test_a8_beats_a6_on_outlier_activations(rng):
    g = torch.Generator().manual_seed(9)
    torch.manual_seed(2)
    ref = _TwoBranches()
    x = _inputs(g, 64)
    errors = {}
    for fraction in (0.0, 1.0):
        model = _TwoBranches()
        model.load_state_dict(ref.state_dict())
        quantize_(model, W6A6(a8_fraction=fraction))
        with torch.no_grad():
            errors[fraction] = float((model(x) - ref(x)).norm() / ref(x).norm())
    assert errors[1.0] < 0.5 * errors[0.0]


def test_act_bits_survive_save_and_load(tmp_path):
    g = torch.Generator().manual_seed(4)
    x = _inputs(g, 64)
    model = quantize_(_TwoBranches(), W6A6(a8_fraction=0.5), calibration=[x])
    save_quantized(model, tmp_path)
    layers = json.loads((tmp_path / "manifest.json").read_text())["layers"]
    assert {name: entry["act_bits"] for name, entry in layers.items()} == {"a": 6, "b": 8}
    loaded = load_quantized(_TwoBranches(), tmp_path)
    assert loaded.b.act_bits == 8 and torch.equal(loaded(x), model(x))
