"""The registered transforms: how each config type changes a model in place."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from quant.clipping import search_clipping
from quant.configs import FMPQ, KV4, W4A4, W4A8, W4A16, W6A6, W8A8, QuantConfig
from quant.errors import CalibrationError, ConfigError
from quant.folding import fold_into_producer, foldable_groups
from quant.kv import KVQuantized
from quant.layers import layer_type
from quant.recipes import CALIBRATED_RECIPES, search_smoothing
from quant.registry import register_transform

__all__ = ["QuantContext"]


@dataclass
class QuantContext:
    """What a transform may use besides the model and config: chosen layers, recipe, calibration rows."""

    layers: list[str]
    recipe: str = "rtn"
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    fold: bool | dict[str, list[str]] = False  # fold smoothing into producers (True: found by tracing)


def _fold_smoothing(model: nn.Module, config: QuantConfig, context: QuantContext) -> dict[str, torch.Tensor]:
    """Search one smoothing vector per foldable producer and fold it in; return each folded layer's vector."""
    groups = context.fold if isinstance(context.fold, dict) else foldable_groups(model)
    folded = {}
    for producer, consumers in groups.items():
        if not consumers or not all(name in context.inputs for name in consumers):
            continue  # a layer the filter left in float, or one that saw no input: this producer stays as it is
        layers = [model.get_submodule(name) for name in consumers]
        stacked = nn.Linear(layers[0].in_features, sum(layer.out_features for layer in layers), bias=False,
                            device=layers[0].weight.device)
        with torch.no_grad():
            stacked.weight.copy_(torch.cat([layer.weight.detach().float() for layer in layers]))
        smooth = search_smoothing(stacked, context.inputs[consumers[0]], config, context.recipe)
        if smooth is not None:
            fold_into_producer(model.get_submodule(producer), layers, smooth)
            folded.update({name: smooth for name in consumers})
    return folded


def _linear_transform(model: nn.Module, config: QuantConfig, context: QuantContext) -> None:
    """Replace each chosen ``nn.Linear`` by its format's quantized layer, smoothing first when the recipe says so.

    ``awq`` then clips each weight group's range by AWQ's search (:mod:`quant.clipping`).
    """
    if context.recipe in CALIBRATED_RECIPES and not context.inputs:
        raise CalibrationError(f"recipe {context.recipe!r} needs calibration data", recipe=context.recipe)
    if context.recipe == "llm.int8" and not isinstance(config, W8A8):
        raise ConfigError("the llm.int8 recipe decomposes W8A8 layers only", config=type(config).__name__)
    cls = layer_type(config)
    folded = _fold_smoothing(model, config, context) if context.fold and context.recipe in CALIBRATED_RECIPES else {}
    for name in context.layers:
        linear = model.get_submodule(name)
        x = context.inputs.get(name)
        if name in folded:  # its input now arrives divided by the folded vector, its weights multiplied
            x, smooth = x / folded[name].to(x.device), None
        else:
            smooth = (search_smoothing(linear, x, config, context.recipe)
                      if x is not None and context.recipe in CALIBRATED_RECIPES else None)
        if context.recipe == "awq":
            linear = search_clipping(linear, x, config, smooth, getattr(config, "group_size", linear.in_features))
        absmax = None if x is None else x.abs().amax(dim=0)
        model.set_submodule(name, cls.from_linear(linear, config, smooth=smooth, act_absmax=absmax,
                                                  recipe=context.recipe))


for _config_type in (W4A16, W4A8, W4A4, W8A8, FMPQ):
    register_transform(_config_type)(_linear_transform)


@register_transform(W6A6)
@torch.no_grad()
def _w6a6_transform(model: nn.Module, config: W6A6, context: QuantContext) -> None:
    """Quantize to W6A6, then give 8-bit activations to the ``a8_fraction`` of layers most sensitive to 6 bits.

    FlexQ's layer-wise choice: a layer's sensitivity is how far its output on the calibration rows moves
    when its activations drop from 8 to 6 bits, relative to the 8-bit output.
    """
    _linear_transform(model, config, context)
    count = round(config.a8_fraction * len(context.layers))
    if 0 < count < len(context.layers) and not context.inputs:
        raise CalibrationError("W6A6 picks its A8 layers on calibration data; pass calibration= to quantize_",
                               a8_fraction=config.a8_fraction)
    layers = [model.get_submodule(name) for name in context.layers]
    sensitivity = []
    for name, layer in zip(context.layers, layers):
        x = context.inputs.get(name)
        if x is None or count in (0, len(layers)):
            sensitivity.append(0.0)
            continue
        y6 = layer(x)
        layer.act_bits = 8
        y8 = layer(x)
        layer.act_bits = 6
        sensitivity.append(float((y6 - y8).norm() / y8.norm().clamp(min=1e-12)))
    for index in sorted(range(len(layers)), key=lambda i: -sensitivity[i])[:count]:
        layers[index].act_bits = 8


@register_transform(KV4)
def _kv4_transform(model: nn.Module, config: KV4, context: QuantContext) -> None:
    """Wrap every chosen layer whose name ends with one of ``config.targets`` in ``KVQuantized``."""
    chosen = [name for name in context.layers if name.rsplit(".", 1)[-1] in config.targets]
    if not chosen:
        raise ConfigError("KV4 found no layer whose name ends with one of its targets", targets=config.targets)
    for name in chosen:
        model.set_submodule(name, KVQuantized(model.get_submodule(name), config))
