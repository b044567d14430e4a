"""Which quantized layer class holds each linear format, and rebuilding one from a manifest entry."""

from __future__ import annotations

from typing import Any

from quant.configs import FMPQ, W4A4, W4A8, W4A16, W6A6, W8A8, QuantConfig, config_from_json
from quant.errors import ConfigError, FormatError
from quant.fmpq_linear import FMPQLinear
from quant.layer_base import QuantLayer
from quant.linear import QuantLinear
from quant.w8a8_linear import W8A8Linear

__all__ = ["LAYER_TYPES", "layer_type", "layer_from_description"]

LAYER_TYPES: dict[type[QuantConfig], type[QuantLayer]] = {W4A16: QuantLinear, W4A8: QuantLinear, W4A4: QuantLinear,
                                                           FMPQ: FMPQLinear, W8A8: W8A8Linear,
                                                           W6A6: W8A8Linear}


def layer_type(config: QuantConfig) -> type[QuantLayer]:
    """Return the layer class that holds ``config``'s format, or raise listing the linear formats."""
    cls = LAYER_TYPES.get(type(config))
    if cls is None:
        raise ConfigError("not a linear-layer format", got=type(config).__name__,
                          known=sorted(c.__name__ for c in LAYER_TYPES))
    return cls


def layer_from_description(desc: dict[str, Any]) -> QuantLayer:
    """Build the empty layer a manifest entry describes (its class chosen by the entry's config)."""
    try:
        config = config_from_json(desc["config"])
        return layer_type(config).from_description(desc)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise FormatError("a manifest layer entry is malformed", reason=str(exc)[:200]) from exc
