"""Save/load of quantized models: safetensors + manifest round-trips, and corrupt files are refused."""

import json

import pytest
import torch
from torch import nn

from safetensors.torch import load_file, save_file

from quant import (FMPQ, KV4, W4A4, W4A8, W4A16, FormatError, QuantLinear, load_quantized, pack_int4, quantize_,
                   save_quantized, unpack_int4)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.key, self.value, self.out = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.out(torch.relu(self.key(x) + self.value(x)))


@pytest.mark.parametrize("config", [W4A16(32), W4A8(64), W4A4(32, outliers=5)])
def test_round_trip_gives_identical_outputs(config, tmp_path, rng):
    x = torch.randn(9, 64, generator=rng)
    model = _Block()
    quantize_(model, config, calibration=[x], recipe="smoothquant")
    quantize_(model, KV4(group_size=32))
    expected = model(x)
    save_quantized(model, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "einfhe.quant" and set(manifest["kv"]) == {"key", "value"}
    assert set(manifest["layers"]) == {"key.inner", "value.inner", "out"}
    loaded = load_quantized(_Block(), tmp_path)
    assert isinstance(loaded.out, QuantLinear) and loaded.out.config == config
    assert torch.equal(loaded(x), expected)


def test_load_refuses_wrong_version_and_wrong_skeleton(tmp_path):
    model = nn.Sequential(nn.Linear(64, 8))
    quantize_(model, W4A16(32))
    save_quantized(model, tmp_path)
    with pytest.raises(FormatError, match="does not match"):
        load_quantized(nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 3)), tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(FormatError, match="v1 manifest"):
        load_quantized(nn.Sequential(nn.Linear(64, 8)), tmp_path)
    with pytest.raises(FormatError, match="manifest.json"):
        load_quantized(nn.Sequential(nn.Linear(64, 8)), tmp_path / "missing")


def test_load_refuses_a_skeleton_layer_of_other_sizes(tmp_path):
    model = nn.Sequential(nn.Linear(100, 300))
    quantize_(model, W4A16(32))
    save_quantized(model, tmp_path)
    with pytest.raises(FormatError, match=r"differs.*skeleton=\(100, 200, True\), saved=\(100, 300, True\)"):
        load_quantized(nn.Sequential(nn.Linear(100, 200)), tmp_path)
    with pytest.raises(FormatError, match="not an nn.Linear"):
        load_quantized(nn.Sequential(nn.Conv1d(100, 300, 1)), tmp_path)


def test_the_recipe_is_recorded_whatever_its_case(tmp_path, rng):
    x = torch.randn(20, 64, generator=rng)
    model = nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 4))
    quantize_(model, W4A8(32), calibration=[x], recipe="AWQ", filter_fn=lambda _m, name: name == "0")
    quantize_(model, W4A16(32))
    save_quantized(model, tmp_path)
    layers = json.loads((tmp_path / "manifest.json").read_text())["layers"]
    assert {name: entry["recipe"] for name, entry in layers.items()} == {"0": "awq", "1": "rtn"}
    loaded = load_quantized(nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 4)), tmp_path)
    assert loaded[0].recipe == "awq" and torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("config", [W4A16(128), W4A8(64), W4A4(32, outliers=3), FMPQ(32)])
def test_weights_pad_k_only_to_the_group_and_older_tile_padded_files_still_load(config, tmp_path, rng):
    # 100 inputs at g128 store 128 rows (not 256); 384 at g64 store 384 (not 512)
    x100 = torch.randn(6, 100, generator=rng)
    model = nn.Sequential(nn.Linear(100, 384), nn.ReLU(), nn.Linear(384, 12))
    quantize_(model, config, calibration=[x100])
    gs = config.group_size
    for layer, k in ((model[0], 100), (model[2], 384)):
        assert layer.qweight.shape[0] * 8 == -(-k // gs) * gs
    expected = model(x100)
    save_quantized(model, tmp_path)
    assert torch.equal(load_quantized(nn.Sequential(nn.Linear(100, 384), nn.ReLU(), nn.Linear(384, 12)),
                                      tmp_path)(x100), expected)
    # rewrite the file as quant wrote it when K was padded to whole 256-row tiles: codes of 8 and scales of 1
    # in the extra rows, which multiply only the input's zero padding
    state = load_file(str(tmp_path / "model.safetensors"))
    for prefix, k in (("0.", 100), ("2.", 384)):
        old_k = -(-k // max(256, gs)) * max(256, gs)
        codes = unpack_int4(state[prefix + "qweight"])
        extra = torch.full((old_k - codes.shape[0], codes.shape[1]), 8)
        state[prefix + "qweight"] = pack_int4(torch.cat([codes, extra]))
        for name in ("scales", "zeros", "gscale", "gzero", "a8_groups"):
            if prefix + name in state:
                rows = state[prefix + name]
                state[prefix + name] = torch.cat([rows, torch.ones(old_k // gs - rows.shape[0], *rows.shape[1:],
                                                                   dtype=rows.dtype)])
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = load_quantized(nn.Sequential(nn.Linear(100, 384), nn.ReLU(), nn.Linear(384, 12)), tmp_path)
    assert loaded[0].qweight.shape == model[0].qweight.shape and torch.equal(loaded(x100), expected)
