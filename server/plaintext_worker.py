"""Plaintext inference inside a worker process: a registered model's export loaded into quant's torch modules.

The layers run quant's kernel dispatch: the Triton W4Ax kernels on a CUDA device, their torch references on the
CPU. torch and quant are imported here, in the worker, never in the API process (which only hands over the model's
directory and the samples). Loaded models stay in a small per-process cache: registered models never change.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before torch, as in every process that imports both

import functools

import numpy as np

__all__ = ["infer_plaintext"]


@functools.lru_cache(maxsize=8)
def _module(directory: str):
    """The model's torch modules on this process's device (CUDA when there is one), loaded once per directory."""
    import torch

    import quant

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return quant.load_integer_module(directory).to(device), device


def infer_plaintext(directory: str, rows: np.ndarray) -> np.ndarray:
    """The model in `directory` on a float32 batch `rows` (samples in the model's input shape): its outputs."""
    import torch

    module, device = _module(directory)
    with torch.inference_mode():
        y = module(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(device))
    return y.double().cpu().numpy()
