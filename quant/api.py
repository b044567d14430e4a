"""``quantize_``: change a model in place to a quantized format by a recipe."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from quant.calibration import collect_inputs
from quant.configs import KV4, QuantConfig
from quant.errors import ConfigError
from quant.kv import KVQuantized
from quant.linear import QuantLinear
from quant.recipes import RECIPES
from quant.registry import get_transform
from quant.transforms import QuantContext

__all__ = ["quantize_"]


def quantize_(model: nn.Module, config: QuantConfig, *, calibration: Iterable[Any] | None = None,
              recipe: str = "rtn", seed: int = 0, filter_fn: Callable[[nn.Module, str], bool] | None = None,
              max_rows: int = 1024) -> nn.Module:
    """Quantize ``model`` in place: every ``nn.Linear`` (that ``filter_fn`` keeps) becomes a ``QuantLinear``.

    ``recipe`` is ``"rtn"``, ``"awq"`` or ``"smoothquant"``; the last two need ``calibration``, an
    iterable of batches the model accepts (tensor, tuple of args, or dict of kwargs). With a KV4 config
    the chosen layers named like key/value projections are wrapped instead. Deterministic given ``seed``.

    >>> quantize_(model, W4A16(group_size=128))  # doctest: +SKIP
    """
    if recipe not in RECIPES:
        raise ConfigError("unknown recipe", got=recipe, known=list(RECIPES))
    transform = get_transform(config)
    kinds = (nn.Linear, QuantLinear) if isinstance(config, KV4) else (nn.Linear,)
    layers = [name for name, module in model.named_modules()
              if isinstance(module, kinds) and not isinstance(module, KVQuantized)
              and name and (filter_fn is None or filter_fn(module, name))]
    if not layers:
        raise ConfigError("the model has no layer this config applies to", config=type(config).__name__)
    inputs = {}
    if calibration is not None and not isinstance(config, KV4):
        was_training = model.training
        model.eval()
        inputs = collect_inputs(model, layers, calibration, seed=seed, max_rows=max_rows)
        model.train(was_training)
    transform(model, config, QuantContext(layers=layers, recipe=recipe, inputs=inputs))
    return model
