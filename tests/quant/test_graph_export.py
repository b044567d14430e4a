"""quant.export traces any module into the artifact (JSON DAG + safetensors); quant.load_artifact runs it back."""

import copy
import json

import pytest
import torch
from torch import nn

import quant
from bench.digits_resnet import DigitsResNet
from quant import W4A4, W4A8, W4A16, FormatError, QuantLinear
from quant.int8_layers import int8_per_channel


def _resnet() -> DigitsResNet:
    """The digits ResNet at random weights, its BatchNorms given statistics far from the identity."""
    torch.manual_seed(0)
    model = DigitsResNet()
    for bn in (model.bn0, model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    quant.quantize_(model, W4A16(group_size=64))
    return model.eval()


def _folded_int8_reference(model: DigitsResNet) -> DigitsResNet:
    """The model with each BatchNorm folded into its convolution by hand and the result rounded to int8 per
    output channel (the artifact's W8A16), each BatchNorm then made the identity."""
    reference = copy.deepcopy(model)
    for conv, bn in ((reference.stem, reference.bn0), (reference.conv1, reference.bn1), (reference.conv2, reference.bn2)):
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight * gain[:, None, None, None]
        step = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
        conv.weight.data = torch.round(weight / step) * step
        conv.bias.data = (conv.bias - bn.running_mean) * gain + bn.bias
        bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps), bn.weight.data.fill_(1), bn.bias.data.zero_()
    return reference


def test_resnet_with_batchnorm_and_skip_exports_and_runs_back(tmp_path):
    model = _resnet()
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    quant.export(model, x, tmp_path)
    graph = json.loads((tmp_path / "graph.json").read_text())
    assert [(n["op"], n["inputs"]) for n in graph["nodes"]] == [
        ("conv2d", ["x"]), ("square", ["stem"]), ("conv2d", ["act0"]), ("square", ["conv1"]), ("conv2d", ["act1"]),
        ("add", ["act0", "conv2"]), ("square", ["add"]), ("avgpool", ["act2"]), ("flatten", ["pool"]),
        ("linear", ["flatten"])]  # every BatchNorm folded away
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["format"], manifest["version"], manifest["formats"]) == ("quant.artifact", 1, ["W4A16", "W8A16"])
    loaded = quant.load_artifact(tmp_path)
    assert isinstance(loaded.layers["head"], QuantLinear)
    with torch.no_grad():
        got, expected = loaded(x), _folded_int8_reference(model)(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)  # float32 sums in another order


def test_each_activation_records_its_calibrated_input_range(tmp_path):
    model = _resnet()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    seen = {}
    for name in ("act0", "act1", "act2"):
        getattr(model, name).register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, args[0]))
    with torch.no_grad():
        model(x)
    quant.export(model, x, tmp_path)
    nodes = {n["name"]: n for n in json.loads((tmp_path / "graph.json").read_text())["nodes"]}
    for name, value in seen.items():
        lo, hi = nodes[name]["range"]
        assert lo == pytest.approx(float(value.min()), rel=1e-6) and hi == pytest.approx(float(value.max()), rel=1e-6)


class _Attention(nn.Module):
    """One self-attention block with a residual and a LayerNorm: matmul, softmax, transpose, reshape, layernorm."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 8.0, dim=-1)
        return self.norm(x + self.o(scores @ self.v(x))).reshape(x.shape[0], -1)


@pytest.mark.parametrize("config", [W4A16(32), W4A8(32), W4A4(32, outliers=4), quant.W8A8(), quant.W6A6(),
                                    quant.FMPQ(group_size=32)])
def test_attention_block_round_trips_in_each_format(config, tmp_path):
    torch.manual_seed(0)
    model = _Attention()
    x_calibration = torch.randn(4, 5, 64, generator=torch.Generator().manual_seed(4))
    quant.quantize_(model, config, calibration=[x_calibration])
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(3))
    quant.export(model, x, tmp_path)
    ops = [n["op"] for n in json.loads((tmp_path / "graph.json").read_text())["nodes"]]
    assert {"matmul", "softmax", "transpose", "layernorm", "add", "div", "reshape"} <= set(ops)
    with torch.no_grad():
        expected, got = model(x), quant.load_artifact(tmp_path)(x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)  # the same layers on the same buffers


def test_loaded_artifact_runs_quants_kernel_dispatch(tmp_path, monkeypatch):
    model = _resnet()
    x = torch.rand(4, 1, 8, 8)
    quant.export(model, x, tmp_path)
    calls = []
    reference = quant.linear.reference_w4a16
    monkeypatch.setattr(quant.linear, "reference_w4a16", lambda a, *rest: calls.append(tuple(a.shape)) or reference(a, *rest))
    with torch.no_grad():
        quant.load_artifact(tmp_path)(x)
    assert calls == [(4, 64)]


class _Cumulative(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, 1)


@pytest.mark.parametrize("model, named", [(_Cumulative(), "cumsum"), (nn.Sequential(nn.Linear(4, 4), nn.PReLU()), "PReLU")])
def test_an_op_with_no_node_kind_is_refused_by_name(model, named, tmp_path):
    with pytest.raises(FormatError, match=named):
        quant.export(model, torch.randn(2, 4), tmp_path)


def test_a_changed_weight_file_is_refused(tmp_path):
    quant.export(nn.Sequential(nn.Linear(4, 3)), torch.randn(2, 4), tmp_path)
    data = bytearray((tmp_path / "weights.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="checksum"):
        quant.load_artifact(tmp_path)


def test_int8_linear_nodes_load_as_w8a8linear(tmp_path):
    """A float nn.Linear is exported as a plain W8A16 node; it and a plain W8A8 node (per-token int8 activations)
    load as the one int8 linear layer, computing x @ (w8 * scale).T + b with x as is or rounded per token."""
    torch.manual_seed(0)
    linear = nn.Linear(16, 5)
    x = torch.randn(6, 16)
    quant.export(nn.Sequential(linear), x, tmp_path)
    graph = json.loads((tmp_path / "graph.json").read_text())
    assert graph["nodes"][0]["attrs"]["format"] == "W8A16" and "layer" not in graph["nodes"][0]["attrs"]
    w8, scale = int8_per_channel(linear.weight)
    dequantized = w8.float() * scale[:, None]
    loaded = quant.load_artifact(tmp_path)
    layer = next(m for m in loaded.modules() if isinstance(m, quant.W8A8Linear))
    assert layer.act_bits == 16
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), x @ dequantized.T + linear.bias, rtol=1e-5, atol=1e-5)
    graph["nodes"][0]["attrs"]["format"] = "W8A8"
    tensors = quant.read_artifact(tmp_path)[1]
    quant.write_artifact(tmp_path, graph, tensors)
    step = x.abs().amax(dim=1, keepdim=True) / 127
    rounded = torch.round(x / step) * step
    with torch.no_grad():
        torch.testing.assert_close(quant.load_artifact(tmp_path)(x), rounded @ dequantized.T + linear.bias,
                                   rtol=1e-5, atol=1e-5)


class _Positions(nn.Module):
    def forward(self, x):
        return x * 2 + torch.arange(x.shape[1], device=x.device)


def test_positions_are_made_on_the_inputs_device(tmp_path):
    """``torch.arange(n, device=x.device)`` exports as an arange node that the loaded graph makes where its inputs
    are (on the meta device here: a tensor left on the CPU could not be added to the input)."""
    x = torch.randn(3, 5)
    quant.export(_Positions(), x, tmp_path)
    loaded = quant.load_artifact(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), _Positions()(x))
        on_meta = loaded(x.to("meta"))
    assert (on_meta.device.type, tuple(on_meta.shape)) == ("meta", (3, 5))
