"""Integer export: the numpy-only reader reproduces the torch model, and the arrays hold what the schema says."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import quant
from quant import W4A4, W4A8, W4A16, FormatError, export_integer_model, quantize_, read_integer_model, run_integer_model


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 48), nn.Tanh(), nn.Linear(48, 10))


@pytest.mark.parametrize("config, recipe, bits", [
    (W4A16(32), "awq", (0, 15)), (W4A8(32), "smoothquant", (-128, 127)), (W4A4(32, outliers=3), "rtn", (-8, 7))])
def test_numpy_forward_of_the_export_matches_torch(config, recipe, bits, tmp_path, rng):
    x = torch.randn(40, 64, generator=rng)
    model = _mlp()
    quantize_(model, config, calibration=[x], recipe=recipe)
    export_integer_model(model, tmp_path, example_input=x)
    im = read_integer_model(tmp_path)
    assert [layer["op"] for layer in im.layers] == ["linear", "act", "linear", "act", "linear"]
    for layer in im.layers[::2]:
        w = im.array(layer, "weight")
        assert w.dtype == np.int8 and bits[0] <= w.min() and w.max() <= bits[1]
        assert im.array(layer, "scale").dtype == np.float32
    assert im.layers[0]["activation"]["range"] == [float(x.min()), float(x.max())]
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run_integer_model(im, x.numpy()), expected, rtol=1e-4, atol=1e-4)


def test_conv_pool_flatten_export_quantizes_float_layers_to_int8(tmp_path, rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=1, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Sequential(nn.Linear(64, 10), nn.Sigmoid()))
    x = torch.randn(5, 1, 8, 8, generator=rng)
    export_integer_model(model, tmp_path, example_input=x)
    im = read_integer_model(tmp_path)
    assert [layer["op"] for layer in im.layers] == ["conv2d", "act", "avgpool", "flatten", "linear", "act"]
    assert im.input_shape == [1, 8, 8] and im.layers[4]["name"] == "4.0"
    conv = im.layers[0]
    # the same model with its weights replaced by int8 * scale, computed here from the arrays
    with torch.no_grad():
        for idx, layer in ((0, conv), (4, im.layers[4])):
            module = model[0] if idx == 0 else model[4][0]
            w = im.array(layer, "weight").astype(np.float32)
            scale = im.array(layer, "scale").reshape(-1, *([1] * (w.ndim - 1)))
            assert np.abs(w * scale - module.weight.numpy()).max() <= scale.max() / 2 + 1e-7
            module.weight.copy_(torch.from_numpy(w * scale))
        expected = model(x).numpy()
    np.testing.assert_allclose(run_integer_model(im, x.numpy()), expected, rtol=1e-5, atol=1e-5)


def test_unsupported_layers_and_models_are_refused(tmp_path):
    with pytest.raises(FormatError, match="nn.Sequential"):
        export_integer_model(nn.Linear(4, 4), tmp_path)
    with pytest.raises(FormatError, match="cannot export"):
        export_integer_model(nn.Sequential(nn.LayerNorm(4)), tmp_path)


def test_reader_needs_numpy_only(tmp_path):
    model = _mlp()
    quantize_(model, W4A8(32))
    export_integer_model(model, tmp_path)
    reader = Path(quant.__file__).parent / "integer_format.py"
    code = (
        "import importlib.util, sys, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('intfmt', {str(reader)!r})\n"
        "mod = sys.modules['intfmt'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"m = mod.read_integer_model({str(tmp_path)!r})\n"
        "print(mod.run_integer_model(m, np.ones((2, 64))).shape, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(2, 10) False"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format": "other"}))
    with pytest.raises(ValueError, match="einfhe.intmodel"):
        read_integer_model(tmp_path)


def test_square_activation_exports_and_runs(tmp_path, rng):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 8), quant.Square(), nn.Linear(8, 3))
    x = torch.randn(20, 32, generator=rng)
    quantize_(model, W4A16(32), calibration=[x], recipe="rtn")
    export_integer_model(model, tmp_path, example_input=x)
    im = read_integer_model(tmp_path)
    assert (im.layers[1]["op"], im.layers[1]["fn"]) == ("act", "square")
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run_integer_model(im, x.numpy()), expected, rtol=1e-4, atol=1e-4)
