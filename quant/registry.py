"""Map each config type to the private transform that applies it to a model (one decorator)."""

from __future__ import annotations

from typing import Callable, TypeVar

from quant.configs import QuantConfig
from quant.errors import ConfigError

__all__ = ["register_transform", "get_transform", "registered_configs"]

_TRANSFORMS: dict[type[QuantConfig], Callable[..., None]] = {}
F = TypeVar("F", bound=Callable[..., None])


def register_transform(config_type: type[QuantConfig]) -> Callable[[F], F]:
    """Decorate ``fn(model, config, context)`` as the transform for ``config_type``."""

    def decorate(fn: F) -> F:
        if config_type in _TRANSFORMS:
            raise ConfigError("a transform is already registered for this config", config=config_type.__name__)
        _TRANSFORMS[config_type] = fn
        return fn

    return decorate


def get_transform(config: QuantConfig) -> Callable[..., None]:
    """Return the transform registered for ``type(config)``, or raise listing the known configs."""
    fn = _TRANSFORMS.get(type(config))
    if fn is None:
        raise ConfigError("no transform for this config", got=type(config).__name__,
                          known=sorted(c.__name__ for c in _TRANSFORMS))
    return fn


def registered_configs() -> tuple[type[QuantConfig], ...]:
    """Return the config types that have a transform."""
    return tuple(_TRANSFORMS)
