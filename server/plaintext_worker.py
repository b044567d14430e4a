"""Plaintext inference inside a worker process: a registered model (quant's artifact, or integer export) loaded into
quant's torch modules.

The layers run quant's kernel dispatch: the Triton W4Ax kernels on a CUDA device, their torch references on the
CPU. torch and quant are imported here, in the worker, never in the API process (which only hands over the model's
directory and the samples). Loaded models stay in a small per-process cache: registered models never change.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before torch, as in every process that imports both

import functools
from pathlib import Path

import numpy as np

__all__ = ["infer_plaintext"]


@functools.lru_cache(maxsize=8)
def _module(directory: str):
    """The model's torch modules on this process's device (CUDA when there is one), loaded once per directory."""
    import torch

    import quant

    device = "cuda" if torch.cuda.is_available() else "cpu"
    artifact = (Path(directory) / "graph.json").exists()
    module = quant.load_artifact(directory) if artifact else quant.load_integer_module(directory)
    return module.to(device), device


def infer_plaintext(directory: str, *inputs: np.ndarray) -> np.ndarray:
    """The model in `directory` on its batched inputs (float32 samples in the model's input shape, or integer ids):
    its outputs."""
    import torch

    module, device = _module(directory)
    with torch.inference_mode():
        y = module(*(torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs))
    return y.double().cpu().numpy()
