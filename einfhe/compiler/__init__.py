"""Lowering to plans: the einsum compiler (`einsum`), the step emitter it and the model compiler share (`builder`),
the contraction strategies (`strategies`), the model compiler (`model`) and the integer-model reader
(`integer_model`)."""

from __future__ import annotations

from .builder import Packed, PlanBuilder
from .einsum import DEFAULT_MAX_CTS, DEFAULT_SLOTS, Cipher, cipher, compile_einsum
from .integer_model import load_integer_model, read_integer_export
from .model import ChebyshevActivation, IntLinear, Linear, ModelPlan, Quadratic, Residual, Square, compile_model

__all__ = [
    "ChebyshevActivation", "Cipher", "DEFAULT_MAX_CTS", "DEFAULT_SLOTS", "IntLinear", "Linear", "ModelPlan", "Packed",
    "PlanBuilder", "Quadratic", "Residual", "Square", "cipher", "compile_einsum", "compile_model", "load_integer_model",
    "read_integer_export",
]
