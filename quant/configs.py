"""Quantization formats as versioned, frozen config dataclasses that round-trip through JSON.

A config names *what* a model becomes; ``quantize_`` and the recipes decide *how*. JSON is rebuilt only
for the config types in :data:`ALLOWED_CONFIGS`, never by importing a name found in a file.

>>> config_from_json(config_to_json(W4A16(group_size=64)))
W4A16(group_size=64, version=1)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from quant.errors import ConfigError

__all__ = ["W4A16", "W4A8", "W4A4", "FMPQ", "W8A8", "W6A6", "KV4", "QuantConfig", "ALLOWED_CONFIGS", "config_to_json", "config_from_json"]


def _check_group_size(group_size: object) -> None:
    """Raise unless the group size is a power of two of at least 32 (the kernels' sub-tile height)."""
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 32 or group_size & (group_size - 1):
        raise ConfigError("group_size must be a power of two >= 32; try 64 or 128", group_size=group_size)


def _check_fraction(name: str, value: object) -> None:
    """Raise unless ``value`` is a number in [0, 1]."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1]", **{name: value})


class QuantConfig:
    """Base of all formats; ``version`` is bumped whenever the meaning of a field changes."""

    VERSION: ClassVar[int] = 1
    version: int  # declared last by each format, so positional arguments stay the format's own

    def __post_init__(self) -> None:
        if self.version != self.VERSION:
            raise ConfigError(f"{type(self).__name__} version {self.version} is not supported",
                              supported=self.VERSION)
        if "group_size" in {f.name for f in dataclasses.fields(self)}:  # group-wise formats (all but W8A8)
            _check_group_size(self.group_size)


@dataclass(frozen=True)
class W4A16(QuantConfig):
    """Group-wise asymmetric int4 weights with fp16 scales and zero points; fp16 activations."""

    group_size: int = 128
    version: int = 1


@dataclass(frozen=True)
class W4A8(QuantConfig):
    """QServe progressive weights (int8 per channel, then int4 per group with integer scales) and per-token int8 activations.

    Groups of 64 by default: a uint8 scale and zero per 64 weights cost 0.25 bits a weight, what W4A16's fp16
    scale and zero per 128 cost; at 128 the int4 grid lost the accuracy 8-bit activations keep (BENCHMARKS.md).
    """

    group_size: int = 64
    version: int = 1


@dataclass(frozen=True)
class W4A4(QuantConfig):
    """Group-wise symmetric int4 weights, per-token int4 activations, ``outliers`` input channels kept in int8."""

    group_size: int = 128
    outliers: int = 32
    version: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.outliers, int) or isinstance(self.outliers, bool) or self.outliers < 0:
            raise ConfigError("outliers must be a non-negative int", outliers=self.outliers)


@dataclass(frozen=True)
class FMPQ(QuantConfig):
    """COMET's fine-grained mixed-precision W4A4: group-wise int4 weights, per-(token, group) activation scales.

    Input channels are reordered by calibration magnitude (folded into the weights) and the
    ``ceil(a8_fraction * groups)`` groups of largest activations are quantized to 8 bits, the rest to 4.
    """

    group_size: int = 64
    a8_fraction: float = 0.125
    version: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction("a8_fraction", self.a8_fraction)


@dataclass(frozen=True)
class W8A8(QuantConfig):
    """Per-output-channel symmetric int8 weights and per-token int8 activations: SmoothQuant's format.

    Xiao et al., "SmoothQuant" (ICML 2023), section 4: W8A8 with per-token activation and per-channel
    weight scales runs on int8 GEMMs. The ``llm.int8`` recipe adds LLM.int8()'s outlier decomposition.
    """

    version: int = 1


@dataclass(frozen=True)
class W6A6(QuantConfig):
    """Per-channel symmetric int6 weights and per-token int6 activations, some layers' activations in int8.

    FlexQ (Zhang et al. 2025, "FlexQ: Efficient Post-training INT6 Quantization for LLM Serving"): W6A6
    everywhere except the ``a8_fraction`` of layers whose output 6-bit activations change most on
    calibration (a layer-wise sensitivity), which keep 8-bit activations. ``a8_fraction=1.0`` is W6A8.
    """

    a8_fraction: float = 0.0
    version: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction("a8_fraction", self.a8_fraction)


@dataclass(frozen=True)
class KV4(QuantConfig):
    """Group-wise asymmetric int4 keys and values: the outputs of the Linear layers named in ``targets``."""

    group_size: int = 64
    targets: tuple[str, ...] = ("key", "value", "k_proj", "v_proj")
    version: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ConfigError("targets must be a non-empty tuple of module-name suffixes", targets=self.targets)
        object.__setattr__(self, "targets", tuple(self.targets))


ALLOWED_CONFIGS: dict[str, type[QuantConfig]] = {cls.__name__: cls for cls in (W4A16, W4A8, W4A4, FMPQ, W8A8, W6A6, KV4)}


def config_to_json(config: QuantConfig) -> str:
    """Serialize a config as ``{"type": name, "fields": {...}}`` JSON."""
    if type(config).__name__ not in ALLOWED_CONFIGS:
        raise ConfigError("not a quant config", got=type(config).__name__, allowed=sorted(ALLOWED_CONFIGS))
    return json.dumps({"type": type(config).__name__, "fields": dataclasses.asdict(config)}, sort_keys=True)


def config_from_json(text: str | dict[str, Any]) -> QuantConfig:
    """Rebuild a config from JSON text (or its parsed dict), accepting only allowlisted types and fields."""
    try:
        data = json.loads(text) if isinstance(text, str) else text
        name, fields = data["type"], data["fields"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError("config JSON must be an object with 'type' and 'fields'") from exc
    cls = ALLOWED_CONFIGS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError("config type is not in the allowlist", got=name, allowed=sorted(ALLOWED_CONFIGS))
    known = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(fields, dict) or set(fields) - known:
        raise ConfigError("unknown config fields", type=name, got=sorted(fields) if isinstance(fields, dict) else fields,
                          known=sorted(known))
    if "targets" in fields and isinstance(fields["targets"], list):
        fields = {**fields, "targets": tuple(fields["targets"])}
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ConfigError("bad config fields", type=name, reason=str(exc)) from exc
