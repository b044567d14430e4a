"""Low-bit quantization for einfhe: formats, recipes, packed int4 layers, Triton kernels and exports.

>>> from quant import quantize_, W4A16
>>> quantize_(model, W4A16(group_size=128))  # doctest: +SKIP

``quant`` depends on torch, triton, numpy and safetensors only (never openfhe or fastapi).
"""

from quant import transforms as _transforms  # noqa: F401  (registers the transforms)
from quant.activations import Square
from quant.api import quantize_
from quant.artifact import ARTIFACT_FORMAT, ARTIFACT_VERSION, read_artifact, write_artifact
from quant.configs import ALLOWED_CONFIGS, FMPQ, KV4, W4A4, W4A8, W4A16, W6A6, W8A8, QuantConfig, config_from_json, config_to_json
from quant.errors import CalibrationError, ConfigError, FormatError, QuantError, ShapeError
from quant.integer_export import export_integer_model
from quant.fmpq_linear import FMPQLinear
from quant.int8_layers import Int8Conv2d
from quant.integer_format import IntegerModel, read_integer_model, run_integer_model
from quant.graph_export import export
from quant.graph_module import ArtifactModule, load_artifact
from quant.integer_torch import integer_module, load_integer_module
from quant.kv import KVQuantized
from quant.kv_cache import (QuantKVCache, decode_scales, dequantize_heads, dequantize_static, encode_scales, kv_centers,
                            kv_ranges, quantize_heads, quantize_static, rotate_half_rope)
from quant.layer_base import QuantLayer
from quant.linear import QuantLinear
from quant.packing import pack_int4, unpack_int4
from quant.recipes import RECIPES
from quant.registry import get_transform, register_transform
from quant.serialization import load_quantized, save_quantized
from quant.smooth_attention import fold_smooth_attention, smooth_attention_scales
from quant.w8a8_linear import W8A8Linear

__all__ = [
    "quantize_",
    "Square",
    "QuantConfig",
    "W4A16",
    "W4A8",
    "W4A4",
    "FMPQ",
    "W8A8",
    "W6A6",
    "KV4",
    "ALLOWED_CONFIGS",
    "config_to_json",
    "config_from_json",
    "RECIPES",
    "register_transform",
    "get_transform",
    "QuantLayer",
    "QuantLinear",
    "W8A8Linear",
    "FMPQLinear",
    "KVQuantized",
    "QuantKVCache",
    "quantize_heads",
    "dequantize_heads",
    "encode_scales",
    "decode_scales",
    "kv_centers",
    "kv_ranges",
    "quantize_static",
    "dequantize_static",
    "rotate_half_rope",
    "smooth_attention_scales",
    "fold_smooth_attention",
    "pack_int4",
    "unpack_int4",
    "save_quantized",
    "load_quantized",
    "export_integer_model",
    "export",
    "load_artifact",
    "ArtifactModule",
    "read_artifact",
    "write_artifact",
    "ARTIFACT_FORMAT",
    "ARTIFACT_VERSION",
    "IntegerModel",
    "read_integer_model",
    "run_integer_model",
    "integer_module",
    "load_integer_module",
    "Int8Conv2d",
    "QuantError",
    "ConfigError",
    "CalibrationError",
    "ShapeError",
    "FormatError",
]
