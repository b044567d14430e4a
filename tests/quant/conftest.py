"""Run Triton kernels on the CPU interpreter: TRITON_INTERPRET must be set before triton is imported."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded generator, so every test draws fresh but reproducible data."""
    return torch.Generator().manual_seed(1234)
