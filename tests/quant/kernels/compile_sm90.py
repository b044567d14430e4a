"""Compile quant's Triton kernels for an H100 (sm_90) on a machine without a GPU: Triton's frontend, its MLIR
passes, LLVM and ptxas, down to a cubin. Run without TRITON_INTERPRET (tests/quant/kernels/test_compile_sm90.py)."""

import importlib
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

assert not os.environ.get("TRITON_INTERPRET"), "the interpreter compiles nothing: run without TRITON_INTERPRET"
kernels = {name: importlib.import_module(f"quant.kernels.{name}")
           for name in ("w4a16", "w4a8", "w4a4", "fmpq", "dequant", "decode_attention")}


def compile_for_h100(fn, types: dict, constexprs: dict) -> None:
    """Compile ``fn`` with these argument types (``"*i32"``, ``"i32"``, ...) and constexpr values to a cubin."""
    signature = {a: "constexpr" if a in constexprs else types[a] for a in fn.arg_names}
    compiled = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32))
    assert compiled.asm["cubin"], fn.__name__


int4 = dict(qw_ptr="*i32", M="i32", N="i32", K="i32", n_tiles="i32", stride_xm="i32")
for raw in (True, False):  # K = 384 at g128: a whole tile and a 4-sub-block tail, split in two
    compile_for_h100(kernels["w4a16"]._w4a16_kernel,
                     dict(int4, x_ptr="*fp16", s_ptr="*fp16", z_ptr="*fp16", y_ptr="*fp16", ws_ptr="*fp32",
                          cnt_ptr="*i32", tiles_per_split="i32"),
                     dict(GROUP=128, BM=16 if raw else 64, BN=32 if raw else 64, SPLIT=2, RAW=raw, EVEN_K=True,
                          EVEN_N=False, TAIL=4))
integer = dict(GROUP=32, BM=16, BN=64, SPLIT_K=2, TAIL=3)
compile_for_h100(kernels["w4a8"]._w4a8_kernel, dict(int4, x_ptr="*i8", xs_ptr="*fp32", gs_ptr="*u8", gz_ptr="*u8",
                                                    ws_ptr="*fp32", y_ptr="*fp32"), integer)
compile_for_h100(kernels["w4a4"]._w4a4_kernel, dict(int4, x_ptr="*i8", xs_ptr="*fp32", xo_ptr="*i8", xos_ptr="*fp32",
                                                    s_ptr="*fp16", ow_ptr="*i8", os_ptr="*fp32", y_ptr="*fp32",
                                                    NO="i32", stride_xom="i32"), integer)
compile_for_h100(kernels["fmpq"]._fmpq_kernel, dict(int4, x_ptr="*i8", xs_ptr="*fp32", s_ptr="*fp16", y_ptr="*fp32",
                                                    G="i32"), integer)
dequant = dict(qw_ptr="*i32", N="i32", K="i32", n_tiles="i32")
compile_for_h100(kernels["dequant"]._dequant_kernel, dict(dequant, a_ptr="*fp16", b_ptr="*fp16", out_ptr="*fp16"),
                 dict(MODE=0, GROUP=64, BN=64, TAIL=2))
compile_for_h100(kernels["dequant"]._dequant_int8_kernel, dict(dequant, gs_ptr="*u8", gz_ptr="*u8", out_ptr="*i8"),
                 dict(GROUP=64, BN=64, TAIL=2))
for static in (False, True):
    table, zero = ("*fp32", "*fp32") if static else ("*u8", "*i8")
    compile_for_h100(kernels["decode_attention"]._decode_kernel,
                     dict(q_ptr="*fp32", kc_ptr="*u8", ks_ptr=table, kz_ptr=zero, vc_ptr="*u8", vs_ptr=table,
                          vz_ptr=zero, o_ptr="*fp32", T="i32", H="i32", sm_scale="fp32", log2_base="fp32"),
                     dict(HALF=32, KG=1 if static else 16, VG=1 if static else 64, BT=64, STATIC=static, ROPE=static))
print("compiled", file=sys.stderr)
