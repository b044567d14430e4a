"""Calibration batches as data loaders hand them out, and clear errors for batches a model cannot take."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from quant import W4A8, CalibrationError, QuantLinear, quantize_
from quant.calibration import batch_arguments, collect_inputs, describe_batch


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 8)

    def forward(self, x, mask):
        return self.proj(x * mask)


def test_a_dataloader_of_inputs_and_targets_calibrates(rng):
    x, y = torch.randn(40, 16, generator=rng), torch.randint(0, 3, (40,), generator=rng)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    rows = collect_inputs(model, ["0"], loader, seed=0)
    assert torch.equal(rows["0"], x)  # the inputs alone reached the first layer, every row once
    quantize_(model, W4A8(32), calibration=loader, recipe="smoothquant")
    assert isinstance(model[0], QuantLinear)


def test_tuples_of_arguments_and_dicts_of_keywords_are_passed_whole(rng):
    model = _TwoInputs()
    x, mask = torch.randn(5, 16, generator=rng), torch.ones(5, 16)
    assert batch_arguments(model, (x, mask)) == ((x, mask), {})
    assert batch_arguments(model, {"x": x, "mask": mask}) == ((), {"x": x, "mask": mask})
    rows = collect_inputs(model, ["proj"], [(x, mask), {"x": x, "mask": mask}], seed=0)
    assert torch.equal(rows["proj"], torch.cat([x, x]))


def test_a_batch_the_model_cannot_take_names_the_shapes_seen(rng):
    model = nn.Sequential(nn.Linear(16, 8))
    with pytest.raises(CalibrationError, match=r"Tensor\[4, 10\] float32"):
        quantize_(model, W4A8(32), calibration=[torch.randn(4, 10, generator=rng)], recipe="awq")
    with pytest.raises(CalibrationError, match=r"seen='\(Tensor\[2, 16\] float32, str, int\)'"):
        collect_inputs(_TwoInputs(), ["proj"], [(torch.randn(2, 16), "a", 3)], seed=0)
    with pytest.raises(CalibrationError, match="seen='object'"):
        collect_inputs(model, ["0"], [object()], seed=0)


def test_describe_batch_spells_nested_structures():
    batch = {"ids": torch.zeros(2, 7, dtype=torch.int64), "extra": [torch.ones(3)]}
    assert describe_batch(batch) == "{'ids': Tensor[2, 7] int64, 'extra': (Tensor[3] float32,)}"


def test_device_moves_calibration_and_the_model_there(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32))
    same = nn.Sequential(nn.Linear(64, 32))
    same.load_state_dict(model.state_dict())
    x = torch.randn(30, 64, generator=rng)
    quantize_(model, W4A8(32), calibration=[x], recipe="SmoothQuant", device="cpu")
    quantize_(same, W4A8(32), calibration=[x], recipe="smoothquant")
    assert model[0].qweight.device.type == "cpu" and model[0].recipe == "smoothquant"
    assert torch.equal(model(x), same(x))
