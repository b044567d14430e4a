"""Execute every notebook in notebooks/ from a clean kernel running this interpreter; any raising cell fails."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 120          # each notebook must run in under 2 minutes (issue 7)
CELL_TIMEOUT_S = 100
KERNEL = "einfhe-test-python"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    """A kernelspec whose argv is this very interpreter, so the notebooks run in the venv under test."""
    root = tmp_path_factory.mktemp("kernels")
    spec_dir = root / KERNEL
    spec_dir.mkdir()
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "einfhe test kernel",
        "language": "python",
        "env": {"MPLBACKEND": "Agg"},
    }))
    return KernelSpecManager(kernel_dirs=[str(root)])


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs: strip them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, kernel_specs, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    check = nbformat.v4.new_code_cell(
        "import sys, os\n"
        f"assert os.path.realpath(sys.prefix) == {os.path.realpath(sys.prefix)!r}, sys.executable"
    )
    nb.cells.append(check)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        km=KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs),
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError when any cell raises
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")
    assert elapsed < TIMEOUT_S, f"{path.name} took {elapsed:.0f} s; notebooks must run in under {TIMEOUT_S} s"
