"""Folding smoothing into the producing LayerNorm or Linear: exact in float, no run-time scale, only where legal."""

import pytest
import torch
from torch import nn

from quant import W4A8, W8A8, ConfigError, quantize_
from quant.folding import fold_into_producer, foldable_groups


class _PreNorm(nn.Module):
    """``ln`` feeds only q/k/v (foldable); ``post`` feeds ``out`` and the residual (not foldable)."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(64)
        self.q, self.k, self.v = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)
        self.post = nn.Linear(64, 64)
        self.out = nn.Linear(64, 8)

    def forward(self, x):
        h = self.ln(x)
        z = torch.relu(self.q(h) + self.k(h) * self.v(h))
        p = self.post(z)
        return self.out(p) + p[:, :8]


def _inputs(g, rows):
    x = torch.randn(rows, 64, generator=g)
    x[:, :4] *= 25.0
    return x


def test_tracing_finds_only_producers_whose_output_feeds_linears_alone():
    assert foldable_groups(_PreNorm()) == {"ln": ["q", "k", "v"]}


def test_folding_a_vector_leaves_the_float_model_unchanged(rng):
    model = _PreNorm()
    with torch.no_grad():
        model.ln.weight.uniform_(0.5, 2.0)
        model.ln.bias.normal_()
    x = _inputs(rng, 16)
    before = model(x).detach()
    fold_into_producer(model.ln, [model.q, model.k, model.v], torch.rand(64, generator=rng) + 0.3)
    assert torch.allclose(model(x), before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="folds into"):
        fold_into_producer(nn.ReLU(), [model.q], torch.ones(64))


@pytest.mark.parametrize("config", [W8A8(), W4A8(32)])
def test_folded_smoothquant_has_no_run_time_scale_and_stays_accurate(config):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    ref = _PreNorm()
    calibration, test = _inputs(g, 256), _inputs(g, 256)
    errors = {}
    for name, kwargs in (("rtn", {"recipe": "rtn"}), ("runtime", {"recipe": "smoothquant"}),
                         ("folded", {"recipe": "smoothquant", "fold": True})):
        model = _PreNorm()
        model.load_state_dict(ref.state_dict())
        quantize_(model, config, calibration=[calibration], **kwargs)
        with torch.no_grad():
            errors[name] = float((model(test) - ref(test)).norm() / ref(test).norm())
        if name == "folded":
            assert all(getattr(model, n).input_scale is None for n in ("q", "k", "v"))
            assert not torch.equal(model.ln.weight, ref.ln.weight)
    assert errors["folded"] < errors["rtn"] and errors["folded"] < 1.25 * errors["runtime"]


def test_an_untraceable_model_names_its_producers(rng):
    class Untraceable(_PreNorm):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return super().forward(x)
            return super().forward(-x)

    x = _inputs(rng, 64)
    with pytest.raises(ConfigError, match="fold="):
        quantize_(Untraceable(), W8A8(), calibration=[x], recipe="smoothquant", fold=True)
    model = quantize_(Untraceable(), W8A8(), calibration=[x], recipe="smoothquant", fold={"ln": ["q", "k", "v"]})
    assert model.q.input_scale is None
