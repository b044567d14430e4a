"""The package's public surface and its dependency boundary."""

import subprocess
import sys

import quant


def test_all_lists_exactly_the_public_names():
    public = {name for name in vars(quant) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(quant, name)).__name__ == "module"}
    assert set(quant.__all__) == public - modules
    assert len(quant.__all__) == len(set(quant.__all__))


def test_quant_never_imports_openfhe_or_fastapi():
    code = "import sys, quant; bad = [m for m in ('openfhe', 'fastapi', 'einfhe') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_error_derives_from_the_root():
    for name in ("ConfigError", "CalibrationError", "ShapeError", "FormatError"):
        assert issubclass(getattr(quant, name), quant.QuantError)
    err = quant.ShapeError("bad shape", got=3)
    assert "bad shape" in str(err) and "got=3" in str(err) and err.context == {"got": 3}
