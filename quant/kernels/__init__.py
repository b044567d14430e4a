"""Triton kernels (W4Ax, FMPQ, the int8 GEMM, int4-cache decode attention) and a CUDA W4A16 kernel for small
batches, each beside its torch reference."""

from quant.kernels.act_quant import quantize_tokens
from quant.kernels._launch import DEQUANT_GEMM_MIN_M, Blocks, pick_blocks, use_dequant_gemm
from quant.kernels.decode_attention import (decode_attention, reference_decode_attention, reference_static_decode_attention,
                                            triton_decode_attention, triton_static_decode_attention)
from quant.kernels.dequant import triton_dequant_w4a4, triton_dequant_w4a8, triton_dequant_w4a16
from quant.kernels.int8_gemm import int8_gemm_scaled, reference_int8_gemm_scaled
from quant.kernels.w4a4 import reference_w4a4, triton_w4a4
from quant.kernels.w4a8 import dequantize_w4a8_int8, reference_w4a8, triton_w4a8
from quant.kernels.fmpq import reference_fmpq, triton_fmpq
from quant.kernels.w4a16 import dequantize_w4a16, reference_w4a16, triton_w4a16
from quant.kernels.w4a16_cuda import cuda_w4a16, w4a16_matmul

__all__ = [
    "decode_attention",
    "quantize_tokens",
    "reference_decode_attention",
    "triton_decode_attention",
    "reference_static_decode_attention",
    "triton_static_decode_attention",
    "Blocks",
    "pick_blocks",
    "DEQUANT_GEMM_MIN_M",
    "use_dequant_gemm",
    "triton_dequant_w4a16",
    "triton_dequant_w4a8",
    "triton_dequant_w4a4",
    "int8_gemm_scaled",
    "reference_int8_gemm_scaled",
    "dequantize_w4a16",
    "reference_w4a16",
    "triton_w4a16",
    "cuda_w4a16",
    "w4a16_matmul",
    "dequantize_w4a8_int8",
    "reference_w4a8",
    "triton_w4a8",
    "reference_w4a4",
    "triton_w4a4",
    "reference_fmpq",
    "triton_fmpq",
]
