"""Errors raised by ``quant``; every one derives from :class:`QuantError`.

The tree::

    QuantError
    ├── ConfigError          a config is malformed, unknown, or not in the allowlist
    ├── CalibrationError     a recipe needs calibration data that is missing or unusable
    ├── ShapeError           a tensor or layer has a shape the format cannot handle
    └── FormatError          a saved or exported file is missing, corrupt, or of another version
"""

from __future__ import annotations

__all__ = ["QuantError", "ConfigError", "CalibrationError", "ShapeError", "FormatError"]


class QuantError(Exception):
    """Root of every error that ``quant`` raises on purpose."""

    def __init__(self, message: str, **context: object) -> None:
        self.context = context
        if context:
            details = ", ".join(f"{key}={value!r}" for key, value in context.items())
            message = f"{message} ({details})"
        super().__init__(message)


class ConfigError(QuantError):
    """A quantization config is malformed, unknown, or outside the allowlist."""


class CalibrationError(QuantError):
    """A recipe needs calibration data that is missing or unusable."""


class ShapeError(QuantError):
    """A tensor or layer has a shape the chosen format cannot handle."""


class FormatError(QuantError):
    """A saved or exported model file is missing, corrupt, or of an unsupported version."""
