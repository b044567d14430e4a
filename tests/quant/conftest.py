"""Run Triton kernels on the CPU interpreter: TRITON_INTERPRET must be set before triton is imported."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded generator, so every test draws fresh but reproducible data."""
    return torch.Generator().manual_seed(1234)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fail loudly if triton was imported (by another package's tests) before TRITON_INTERPRET was set."""
    from quant.kernels import w4a16

    if type(w4a16._w4a16_kernel).__name__ != "InterpretedFunction":
        raise pytest.UsageError("quant's Triton kernels were built before TRITON_INTERPRET=1 was set; "
                                "set it in tests/conftest.py (before anything imports triton)")
