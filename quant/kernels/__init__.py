"""Triton W4Ax kernels, each beside the pure-torch reference that is its oracle."""

from quant.kernels._launch import Blocks, pick_blocks
from quant.kernels.w4a4 import reference_w4a4, triton_w4a4
from quant.kernels.w4a8 import dequantize_w4a8_int8, reference_w4a8, triton_w4a8
from quant.kernels.w4a16 import dequantize_w4a16, reference_w4a16, triton_w4a16

__all__ = [
    "Blocks",
    "pick_blocks",
    "dequantize_w4a16",
    "reference_w4a16",
    "triton_w4a16",
    "dequantize_w4a8_int8",
    "reference_w4a8",
    "triton_w4a8",
    "reference_w4a4",
    "triton_w4a4",
]
