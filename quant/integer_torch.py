"""Load an integer export (``quant.integer_format``) back into torch modules that run on quant's kernels.

W4A16 and W4A4 layers become ``QuantLinear`` again (their int4 codes repacked as the kernels read them), W4A8
layers keep their exact int8 intermediate and run the int8 GEMM (``W8A8Linear`` with int8 activations), int8
float-activation layers and convolutions become ``W8A8Linear`` (W8A16, ``act_bits=16``) / ``Int8Conv2d``. On CUDA tensors the layers run
the Triton kernels, elsewhere their torch references: this is how the service answers plaintext requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quant.activations import Square
from quant.configs import W4A4, W4A16
from quant.errors import FormatError
from quant.int8_layers import Int8Conv2d
from quant.integer_format import IntegerModel, read_integer_model
from quant.linear import QuantLinear
from quant.packing import pack_int4, padded_k
from quant.w8a8_linear import W8A8Linear

__all__ = ["integer_module", "load_integer_module"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU,
                "square": Square}


def _tensor(model: IntegerModel, layer: dict[str, Any], key: str) -> torch.Tensor | None:
    """The named array of a layer as a torch tensor (None where the manifest has null)."""
    array = model.array(layer, key)
    return None if array is None else torch.from_numpy(np.ascontiguousarray(array))


def _packed_codes(codes: torch.Tensor, k: int, group_size: int) -> torch.Tensor:
    """Unsigned int4 codes ``[N, K]`` as the kernels' packed ``[K_padded // 8, N]`` words (padding rows zero)."""
    padded = torch.zeros(padded_k(k, group_size), codes.shape[0], dtype=torch.int64)
    padded[:k] = codes.t().to(torch.int64)
    return pack_int4(padded)


def _kernel_group_size(layer: dict[str, Any], groups: int) -> int:
    """The kernels' group size for an exported int4 layer: its own, or (one group per row) any that covers K."""
    k, gs = int(layer["in_features"]), int(layer["group_size"])
    if gs >= 32 and not gs & (gs - 1):
        return gs
    if groups == 1:
        return max(32, 1 << (k - 1).bit_length())
    raise FormatError("int4 groups must be a power of two >= 32 (or one group per row) to run on the kernels",
                      layer=layer.get("name"), group_size=gs)


def _per_group(values: torch.Tensor, groups: int) -> torch.Tensor:
    """Exported per-(row, group) values ``[N, G]`` as the kernels' ``[groups, N]`` fp16 (one group repeated)."""
    return values.t().expand(groups, -1).half() if values.shape[1] == 1 else values.t().half()


def _int4_linear(model: IntegerModel, layer: dict[str, Any]) -> QuantLinear:
    """A W4A16 or W4A4 ``QuantLinear`` rebuilt from its exported codes, scales and zero points or outliers."""
    k, n = int(layer["in_features"]), int(layer["out_features"])
    weight, scale = _tensor(model, layer, "weight"), _tensor(model, layer, "scale")
    bias, smooth = _tensor(model, layer, "bias"), _tensor(model, layer, "input_scale")
    gs = _kernel_group_size(layer, scale.shape[1])
    if layer["activation"]["bits"] == 16:
        out = QuantLinear(k, n, W4A16(group_size=gs), bias=bias is not None, smoothed=smooth is not None)
        out.qweight.copy_(_packed_codes(weight, k, gs))
        out.zeros.copy_(_per_group(_tensor(model, layer, "zero"), out.zeros.shape[0]))
    else:
        index = _tensor(model, layer, "outlier_index")
        out = QuantLinear(k, n, W4A4(group_size=gs, outliers=index.numel()), bias=bias is not None,
                          smoothed=smooth is not None, outliers=index.numel())
        out.qweight.copy_(_packed_codes(weight.to(torch.int64) + 8, k, gs))
        out.oweight.copy_(_tensor(model, layer, "outlier_weight").t())
        out.oscale.copy_(_tensor(model, layer, "outlier_scale"))
        out.outlier_idx.copy_(index)
    out.scales.copy_(_per_group(scale, out.scales.shape[0]))
    if bias is not None:
        out.bias.copy_(bias)
    if smooth is not None:
        out.input_scale.copy_(smooth)
    return out


def _int8_linear(model: IntegerModel, layer: dict[str, Any]) -> nn.Module:
    """An int8-weight linear layer (W4A8's int8 intermediate with int8 activations, or float activations)."""
    weight, zero = _tensor(model, layer, "weight"), _tensor(model, layer, "zero")
    if zero is not None and bool(zero.any()):
        raise FormatError("int8 layers are symmetric: their zero points must be 0", layer=layer.get("name"))
    bits = 8 if layer["activation"]["scheme"] == "per_token_symmetric" else 16
    return W8A8Linear.from_int8(weight, _tensor(model, layer, "scale")[:, 0], _tensor(model, layer, "bias"),
                                act_bits=bits, input_scale=_tensor(model, layer, "input_scale"))


def _module(model: IntegerModel, layer: dict[str, Any]) -> nn.Module:
    """The torch module of one exported layer."""
    op = layer["op"]
    if op == "linear":
        return _int4_linear(model, layer) if layer["weight_bits"] == 4 else _int8_linear(model, layer)
    if op == "conv2d":
        return Int8Conv2d(_tensor(model, layer, "weight"), _tensor(model, layer, "scale")[:, 0],
                          _tensor(model, layer, "bias"), stride=layer["stride"], padding=layer["padding"])
    if op == "avgpool":
        return nn.AvgPool2d(layer["kernel_size"], layer["stride"])
    if op == "flatten":
        return nn.Flatten(int(layer["start_dim"]))
    if op == "act" and layer.get("fn") in _ACTIVATIONS:
        return _ACTIVATIONS[layer["fn"]]()
    raise FormatError("the integer export names a layer quant cannot load", layer=layer.get("name"), op=op,
                      fn=layer.get("fn"))


def integer_module(model: IntegerModel) -> nn.Sequential:
    """The torch modules (in eval mode) that compute a parsed integer export on quant's kernels."""
    return nn.Sequential(*(_module(model, layer) for layer in model.layers)).eval()


def load_integer_module(directory: str | Path) -> nn.Sequential:
    """Read the integer export in ``directory`` and return its torch modules (see :func:`integer_module`)."""
    return integer_module(read_integer_model(directory))
