"""Export a quantized ``nn.Sequential`` as plain integer arrays for the encrypted path.

The schema is documented in :mod:`quant.integer_format`. ``QuantLinear`` layers are exported exactly as
they compute: W4A16 as its unsigned int4 codes with per-group zero points and scales; W4A8 as its int8
intermediate (QServe's ``(q - z) * s``) with one scale per output channel; W4A4 as signed int4 codes plus
its int8 outlier block. Float ``nn.Linear`` and ``nn.Conv2d`` layers are quantized here to int8 per output
channel (symmetric). Pooling, flatten and activations are exported as ops with their parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quant.activations import Square
from quant.configs import W4A8, W4A16
from quant.errors import FormatError
from quant.int8_layers import int8_per_channel
from quant.integer_format import INT_FORMAT, INT_VERSION
from quant.kernels import dequantize_w4a8_int8
from quant.linear import QuantLinear
from quant.packing import unpack_int4

__all__ = ["export_integer_model"]

_ACT_NAMES = {nn.ReLU: "relu", nn.GELU: "gelu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", Square: "square"}


def _flat_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """List the leaves of nested ``nn.Sequential`` containers in execution order."""
    if not isinstance(model, nn.Sequential):
        raise FormatError("export_integer_model needs an nn.Sequential", got=type(model).__name__)
    out = []
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        out += _flat_layers(child, f"{full}.") if isinstance(child, nn.Sequential) else [(full, child)]
    return out


def _pair(v: int | tuple[int, ...]) -> list[int]:
    """Return a torch size argument as a two-element list."""
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def _int8_per_channel(weight: torch.Tensor) -> dict[str, np.ndarray]:
    """Quantize a float weight symmetric int8 per output channel: integers, scale ``[N, 1]``, zero ``[N, 1]``."""
    q, scale = int8_per_channel(weight)
    return {"weight": q.numpy(), "scale": scale[:, None].numpy(), "zero": np.zeros((q.shape[0], 1), dtype=np.int8)}


def _quant_linear_arrays(layer: QuantLinear) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return a QuantLinear's integer arrays and the manifest fields that describe them."""
    k, cfg = layer.in_features, layer.config
    gs = cfg.group_size
    if isinstance(cfg, W4A16):
        arrays = {"weight": unpack_int4(layer.qweight.cpu())[:k].t().to(torch.int8).numpy(),
                  "scale": layer.scales.float().cpu().t().numpy(), "zero": layer.zeros.cpu().t().to(torch.int8).numpy()}
        return arrays, {"group_size": gs, "weight_bits": 4,
                        "activation": {"bits": 16, "scheme": "float", "outlier_bits": None}}
    if isinstance(cfg, W4A8):
        w8 = dequantize_w4a8_int8(layer.qweight.cpu(), layer.gscale.cpu(), layer.gzero.cpu(), gs)[:k]
        arrays = {"weight": w8.t().to(torch.int8).numpy(), "scale": layer.wscale.cpu()[:, None].numpy(),
                  "zero": np.zeros((layer.out_features, 1), dtype=np.int8)}
        return arrays, {"group_size": k, "weight_bits": 8,
                        "activation": {"bits": 8, "scheme": "per_token_symmetric", "outlier_bits": None}}
    q = (unpack_int4(layer.qweight.cpu())[:k] - 8).t().to(torch.int8)
    arrays = {"weight": q.numpy(), "scale": layer.scales.float().cpu().t().numpy(),
              "zero": np.zeros_like(layer.scales.cpu().t(), dtype=np.int8),
              "outlier_index": layer.outlier_idx.cpu().numpy(), "outlier_weight": layer.oweight.cpu().t().numpy(),
              "outlier_scale": layer.oscale.cpu().numpy()}
    return arrays, {"group_size": gs, "weight_bits": 4,
                    "activation": {"bits": 4, "scheme": "per_token_symmetric", "outlier_bits": 8}}


def _describe(name: str, module: nn.Module) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return one layer's manifest entry (without array names) and its arrays."""
    float_act = {"bits": 16, "scheme": "float", "outlier_bits": None}
    if isinstance(module, QuantLinear):
        arrays, fields = _quant_linear_arrays(module)
        entry = {"op": "linear", "in_features": module.in_features, "out_features": module.out_features, **fields}
        extra = {"bias": module.bias, "input_scale": module.input_scale}
    elif isinstance(module, nn.Linear):
        arrays = _int8_per_channel(module.weight)
        entry = {"op": "linear", "in_features": module.in_features, "out_features": module.out_features,
                 "group_size": module.in_features, "weight_bits": 8, "activation": float_act}
        extra = {"bias": module.bias, "input_scale": None}
    elif isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.dilation != (1, 1) or isinstance(module.padding, str):
            raise FormatError("conv2d export supports groups=1, dilation=1 and numeric padding", layer=name)
        arrays = _int8_per_channel(module.weight)
        entry = {"op": "conv2d", "in_channels": module.in_channels, "out_channels": module.out_channels,
                 "kernel_size": _pair(module.kernel_size), "stride": _pair(module.stride),
                 "padding": _pair(module.padding), "weight_bits": 8, "activation": float_act}
        extra = {"bias": module.bias, "input_scale": None}
    elif isinstance(module, nn.AvgPool2d):
        if _pair(module.padding) != [0, 0]:
            raise FormatError("avgpool export supports padding=0", layer=name)
        return {"op": "avgpool", "kernel_size": _pair(module.kernel_size),
                "stride": _pair(module.stride or module.kernel_size)}, {}
    elif isinstance(module, nn.Flatten):
        if module.end_dim != -1:
            raise FormatError("flatten export supports end_dim=-1", layer=name)
        return {"op": "flatten", "start_dim": module.start_dim}, {}
    elif type(module) in _ACT_NAMES:
        if isinstance(module, nn.GELU) and module.approximate != "none":
            raise FormatError("gelu export supports the erf form only", layer=name)
        return {"op": "act", "fn": _ACT_NAMES[type(module)]}, {}
    else:
        raise FormatError("cannot export this layer", layer=name, got=type(module).__name__,
                          supported=["QuantLinear", "Linear", "Conv2d", "AvgPool2d", "Flatten",
                                     *sorted(_ACT_NAMES.values())])
    for key, tensor in extra.items():
        arrays[key] = None if tensor is None else tensor.detach().float().cpu().numpy()
    return entry, arrays


@torch.no_grad()
def _input_ranges(layers: list[tuple[str, nn.Module]], example: torch.Tensor) -> list[list[float]]:
    """Run ``example`` through the layers and return each layer's input ``[min, max]``."""
    ranges, x = [], example
    for _name, module in layers:
        ranges.append([float(x.min()), float(x.max())])
        x = module(x)
    return ranges


def export_integer_model(model: nn.Module, path: str | Path, *, example_input: torch.Tensor | None = None) -> Path:
    """Write ``model`` (an ``nn.Sequential``) to ``path/model.npz`` + ``path/manifest.json``; return ``path``.

    With ``example_input`` (a batch), each layer also records the input range it saw, which the
    encrypted path uses to fit polynomial activations.
    """
    path = Path(path)
    layers = _flat_layers(model)
    ranges = _input_ranges(layers, example_input.cpu().float()) if example_input is not None else [None] * len(layers)
    entries, npz = [], {}
    for i, ((name, module), rng) in enumerate(zip(layers, ranges)):
        entry, arrays = _describe(name, module)
        entry["name"] = name
        if "activation" in entry:
            entry["activation"]["range"] = rng
        elif entry["op"] == "act":
            entry["range"] = rng
        if arrays:
            entry["arrays"] = {}
            for key, value in arrays.items():
                entry["arrays"][key] = None if value is None else f"layers.{i}.{key}"
                if value is not None:
                    npz[f"layers.{i}.{key}"] = value
        entries.append(entry)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "model.npz", **npz)
    input_shape = list(example_input.shape[1:]) if example_input is not None else None
    manifest = {"format": INT_FORMAT, "version": INT_VERSION, "input_shape": input_shape, "layers": entries}
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return path
