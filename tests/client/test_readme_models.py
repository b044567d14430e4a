"""The README's path from a torch module to answers (train, quantize, export, register, infer encrypted and in
plaintext) runs as written against a live server, and its answers agree with the quantized torch model.

~30 CPU s: the snippet trains the digits ResNet (150 full-batch epochs) and runs one encrypted batch of 540."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import re
from pathlib import Path

import torch
from client_helpers import TOKENS

import client

README = Path(__file__).resolve().parents[2] / "README.md"


def _models_snippet() -> str:
    """The README's first python block under "### Models"."""
    section = README.read_text().split("### Models", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_models_snippet_runs_as_written(live_server, tmp_path, monkeypatch):
    register = client.Client.register_model
    # the test server takes small insecure rings (a 128-bit ring at 8192 slots would take minutes here)
    monkeypatch.setattr(client.Client, "register_model",
                        lambda self, name, directory, **kw: register(self, name, directory, slots=1024,
                                                                     insecure_test_params=True))
    monkeypatch.chdir(tmp_path)
    scope = {"url": live_server, "operator_token": TOKENS["operator"], "tenant_token": TOKENS["alice"]}
    exec(compile(_models_snippet(), str(README), "exec"), scope)  # noqa: S102 -- the README's own code
    with torch.no_grad():
        quantized = scope["net"](torch.from_numpy(scope["X"])).argmax(1).numpy()
    assert scope["scores"].shape == scope["plain"].shape == (len(scope["X"]), 10)
    assert (scope["plain"].argmax(1) == quantized).mean() >= 0.99
    assert (scope["scores"].argmax(1) == quantized).mean() >= 0.99
    assert (tmp_path / "artifact" / "graph.json").exists()
