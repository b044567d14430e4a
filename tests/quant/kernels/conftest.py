"""With ``QUANT_KERNEL_DEVICE=cuda`` the kernel tests run their kernels on the GPU: each kernel a test module
imports is wrapped to take the test's CPU tensors to the device and bring its results back, so the same
assertions check the compiled kernels against the same CPU references and bounds."""

import functools
import os

import pytest
import torch

ON_GPU = os.environ.get("QUANT_KERNEL_DEVICE") == "cuda"  # read as tests/quant/conftest.py reads it

KERNELS = ("triton_w4a16", "triton_w4a8", "triton_w4a4", "triton_fmpq", "int8_gemm_scaled", "triton_dequant_w4a16",
           "triton_dequant_w4a8", "triton_dequant_w4a4", "triton_decode_attention", "triton_static_decode_attention",
           "triton_quantize_per_token", "w4a16_matmul")


def _to(value, device: str):
    """``value`` with every tensor in it (alone, or in a tuple or list) on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if type(value) in (tuple, list):
        return type(value)(_to(v, device) for v in value)
    return value


def on_gpu(kernel):
    """``kernel`` run on the GPU: its tensor arguments moved there, its tensor results back to the CPU."""
    @functools.wraps(kernel)
    def run(*args, **kwargs):
        out = kernel(*_to(args, "cuda"), **{key: _to(v, "cuda") for key, v in kwargs.items()})
        return _to(out, "cpu")
    return run


@pytest.fixture(autouse=True)
def kernels_on_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the GPU run, swap the test module's kernels for their ``on_gpu`` wrappers."""
    if ON_GPU:
        for name in KERNELS:
            if hasattr(request.module, name):
                monkeypatch.setattr(request.module, name, on_gpu(getattr(request.module, name)))
