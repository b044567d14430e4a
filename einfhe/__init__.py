"""einfhe: einsum over encrypted tensors, compiled to packed RNS-CKKS plans.

    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((n,)))
    ctx = einfhe.Context.for_plan(plan)                    # keys for plan.rotations only
    xe = einfhe.encrypt(ctx, x, plan.input_layout(1))
    y = einfhe.decrypt(ctx, einfhe.einsum("ij,j->i", W, xe, ctx=ctx))
"""

from __future__ import annotations

import openfhe as _openfhe  # noqa: F401  -- load openfhe's libgomp before any other extension's

from .api import decrypt, einsum, encrypt, run, simulate
from .compiler import (
    ChebyshevActivation, Cipher, CompositeReLU, IntLinear, Linear, MatMul, ModelPlan, Quadratic, ReLUWithin, Reorder,
    Residual,
    SmallBatchWarning, Square, cipher, compile_einsum, compile_model, load_integer_model,
)
from .crypto import (
    Context, EncryptedTensor, context_from_evaluation_keys, evaluation_keys_to_bytes, load_context, save_context,
    tensor_from_bytes, tensor_to_bytes,
)
from .errors import (
    BackendError,
    CorruptBlobError,
    DistributedError,
    EinfheError,
    EinsumError,
    LayoutError,
    ModelError,
    OverBudgetError,
    ParameterError,
    PlanError,
    SerializationError,
)
from .layout import Dim, Layout, natural_layout
from .params import NoiseFlooding, Parameters, measure_noise
from .plan import Plan
from .runtime import RunStats
from .spec import EinsumSpec, parse_einsum

compile = compile_einsum  # noqa: A001  -- einfhe.compile(spec, *operands) reads like numpy

__all__ = [
    "BackendError", "Cipher", "CorruptBlobError", "DistributedError", "Context", "Dim", "EinfheError", "EinsumError", "EinsumSpec", "EncryptedTensor",
    "IntLinear", "Layout", "LayoutError", "Linear", "ModelError", "NoiseFlooding", "OverBudgetError", "load_integer_model", "load_context", "save_context", "ChebyshevActivation", "CompositeReLU", "MatMul", "ModelPlan", "Quadratic", "Reorder", "ReLUWithin", "Residual", "SmallBatchWarning", "Square", "compile_model", "ParameterError", "Parameters", "Plan", "PlanError", "RunStats",
    "SerializationError", "cipher", "compile", "compile_einsum", "context_from_evaluation_keys", "decrypt", "einsum", "encrypt", "evaluation_keys_to_bytes",
    "measure_noise", "natural_layout", "parse_einsum", "run", "simulate", "tensor_from_bytes", "tensor_to_bytes",
]
