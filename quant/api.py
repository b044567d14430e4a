"""``quantize_``: change a model in place to a quantized format by a recipe."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from quant.calibration import collect_inputs
from quant.configs import KV4, QuantConfig
from quant.errors import ConfigError
from quant.kv import KVQuantized
from quant.layer_base import QuantLayer
from quant.recipes import recipe_name
from quant.registry import get_transform
from quant.transforms import QuantContext

__all__ = ["quantize_"]


def quantize_(model: nn.Module, config: QuantConfig, *, calibration: Iterable[Any] | None = None,
              recipe: str = "rtn", seed: int = 0, filter_fn: Callable[[nn.Module, str], bool] | None = None,
              max_rows: int = 1024, device: torch.device | str | None = None,
              fold: bool | dict[str, list[str]] = False) -> nn.Module:
    """Quantize ``model`` in place: every ``nn.Linear`` (that ``filter_fn`` keeps) becomes a quantized layer.

    ``recipe`` (any case) is ``"rtn"``, ``"awq"`` or ``"smoothquant"``; the last two need ``calibration``,
    an iterable of batches: tensors, tuples of positional args, dicts of kwargs, or a ``DataLoader``'s
    ``(inputs, targets)``. With ``device`` (e.g. ``"cuda"``) the model is moved there first, so calibration
    and the recipe's search run there, and the quantized model stays there (torchao's ``quantize_`` does
    the same). With ``fold`` (``awq``/``smoothquant``), layers fed only by a LayerNorm or Linear share one
    smoothing vector folded into that op, as the papers do, instead of multiplying it at run time; ``True``
    finds those ops with ``torch.fx``, a dict ``{producer: [layers]}`` names them. With a KV4 config the
    layers named like key/value projections are wrapped instead.
    Deterministic given ``seed``.

    >>> quantize_(model, W4A16(group_size=128))  # doctest: +SKIP
    """
    recipe = recipe_name(recipe)
    transform = get_transform(config)
    if device is not None:
        model.to(device)
    kinds = (nn.Linear, QuantLayer) if isinstance(config, KV4) else (nn.Linear,)
    layers = [name for name, module in model.named_modules()
              if isinstance(module, kinds) and not isinstance(module, KVQuantized)
              and name and (filter_fn is None or filter_fn(module, name))]
    if not layers:
        raise ConfigError("the model has no layer this config applies to", config=type(config).__name__)
    inputs = {}
    if calibration is not None and not isinstance(config, KV4):
        was_training = model.training
        model.eval()
        inputs = collect_inputs(model, layers, calibration, seed=seed, max_rows=max_rows,
                                device=device or _model_device(model))
        model.train(was_training)
    transform(model, config, QuantContext(layers=layers, recipe=recipe, inputs=inputs, fold=fold))
    return model


def _model_device(model: nn.Module) -> torch.device | None:
    """Return the device of the model's first parameter or buffer (None for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None
