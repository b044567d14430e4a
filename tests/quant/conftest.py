"""Run Triton kernels on the CPU interpreter: TRITON_INTERPRET must be set before triton is imported.

With ``QUANT_KERNEL_DEVICE=cuda`` (bench/gpu_round.sh, on a GPU machine) the interpreter stays off and the tests of
tests/quant/kernels run their kernels on the GPU (tests/quant/kernels/conftest.py).
"""

import os

ON_GPU = os.environ.get("QUANT_KERNEL_DEVICE") == "cuda"
if ON_GPU:
    os.environ.pop("TRITON_INTERPRET", None)
else:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded generator, so every test draws fresh but reproducible data."""
    return torch.Generator().manual_seed(1234)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail loudly if triton was imported (by another package's tests) before TRITON_INTERPRET was set, or if the
    GPU run has no GPU; on the GPU, leave out the tests of what happens without one (marked ``cpu_only``)."""
    from quant.kernels import w4a16

    interpreted = type(w4a16._w4a16_kernel).__name__ == "InterpretedFunction"
    if ON_GPU and (interpreted or not torch.cuda.is_available()):
        raise pytest.UsageError("QUANT_KERNEL_DEVICE=cuda needs a CUDA device and TRITON_INTERPRET unset")
    if not ON_GPU and not interpreted:
        raise pytest.UsageError("quant's Triton kernels were built before TRITON_INTERPRET=1 was set; "
                                "set it in tests/conftest.py (before anything imports triton)")
    if ON_GPU:
        kept = [item for item in items if item.get_closest_marker("cpu_only") is None]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
