"""The integer export loaded back into torch modules runs quant's kernel dispatch and computes the quantized model."""

import numpy as np
import pytest
import torch
from torch import nn

import quant
from quant import (W4A4, W4A8, W4A16, FormatError, Int8Conv2d, QuantLinear, W8A8Linear, export_integer_model,
                   quantize_)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 48), nn.Tanh(), nn.Linear(48, 10))


@pytest.mark.parametrize("config, recipe, kind", [
    (W4A16(32), "awq", QuantLinear), (W4A8(32), "smoothquant", W8A8Linear), (W4A4(32, outliers=3), "rtn", QuantLinear)])
def test_loaded_modules_compute_the_quantized_model(config, recipe, kind, tmp_path, rng):
    x = torch.randn(40, 64, generator=rng)
    model = _mlp()
    quantize_(model, config, calibration=[x], recipe=recipe)
    export_integer_model(model, tmp_path, example_input=x)
    loaded = quant.load_integer_module(tmp_path)
    assert all(isinstance(loaded[i], kind) for i in (0, 2, 4))
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    # W4A16 and W4A4 run the same kernels on the same packed integers; W4A8 runs its exact int8 intermediate
    # through the int8 GEMM instead of the fused int4 kernel: the same integer products, float32 roundings apart
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_loaded_linear_layers_dispatch_to_the_kernels_torch_reference(tmp_path, rng, monkeypatch):
    x = torch.randn(8, 64, generator=rng)
    model = _mlp()
    quantize_(model, W4A16(32))
    export_integer_model(model, tmp_path, example_input=x)
    calls = []
    original = quant.linear.reference_w4a16
    monkeypatch.setattr(quant.linear, "reference_w4a16", lambda *a: calls.append(a[0].shape) or original(*a))
    with torch.no_grad():
        quant.load_integer_module(tmp_path)(x)
    assert calls == [(8, 64), (8, 96), (8, 48)]


def test_conv_and_int8_layers_match_the_numpy_forward(tmp_path, rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    x = torch.randn(5, 1, 8, 8, generator=rng)
    export_integer_model(model, tmp_path, example_input=x)
    loaded = quant.load_integer_module(tmp_path)
    assert isinstance(loaded[0], Int8Conv2d) and isinstance(loaded[4], W8A8Linear) and loaded[4].act_bits == 16
    expected = quant.run_integer_model(quant.read_integer_model(tmp_path), x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_unknown_layer_is_named(tmp_path, rng):
    model = nn.Sequential(nn.Linear(64, 10))
    export_integer_model(model, tmp_path)
    manifest = (tmp_path / "manifest.json").read_text().replace('"op": "linear"', '"op": "softmax"')
    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(FormatError, match="softmax"):
        quant.load_integer_module(tmp_path)
