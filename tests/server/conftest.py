"""Fixtures for service tests: two tenants, a data dir, insecure test rings allowed, the app in-process."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import numpy as np
import pytest

from server import Settings, create_app

from server_helpers import SLOTS, TOKENS


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("# test tenants\n" + "".join(f"{t}:{k}\n" for t, k in TOKENS.items()))
    return path


@pytest.fixture
def settings(tmp_path, token_file):
    return Settings(data_dir=tmp_path / "data", token_file=token_file, workers=1,
                    allow_insecure_test_params=True)


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.state.service.close()


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory):
    """A 6-4-2 square-activation MLP quantized to W4A16 by quant and exported as integers (manifest.json,
    model.npz under `dir`), a batch of inputs `X` and the quantized model's own torch output on it."""
    import torch  # imported here, not at collection: quant's Triton tests set TRITON_INTERPRET first
    from torch import nn

    import quant

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), quant.Square(), nn.Linear(4, 2))
    X = torch.rand(9, 6)
    quant.quantize_(net, quant.W4A16(group_size=32))
    directory = tmp_path_factory.mktemp("mlp") / "export"
    quant.export_integer_model(net, directory, example_input=X)
    with torch.no_grad():
        expected = net(X).double().numpy()
    return {"dir": directory, "X": X.double().numpy(), "expected": expected}


@pytest.fixture(scope="module")
def model_files(mlp_export):
    """quant's integer export of a 6-4-2 square-activation MLP: manifest.json and model.npz bytes."""
    return {name: (mlp_export["dir"] / name).read_bytes() for name in ("manifest.json", "model.npz")}


@pytest.fixture(scope="session")
def matvec():
    """A 4x8 matvec plan at 32 slots with an insecure test context (shared: keygen once per session)."""
    rng = np.random.default_rng(0)
    W, x = rng.standard_normal((4, 8)), rng.standard_normal(8)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher(x.shape), slots=SLOTS)
    params = einfhe.Parameters.insecure_for_tests(2, SLOTS)
    ctx = einfhe.Context.for_plan(plan, params=params)
    return {"W": W, "x": x, "plan": plan, "params": params, "ctx": ctx}
