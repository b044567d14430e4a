"""Plaintext inference runs in a worker process on quant's kernel dispatch; the API process never imports torch."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from server.plaintext_worker import infer_plaintext

ROOT = Path(__file__).resolve().parents[2]

# the API process, alone in a fresh interpreter: register the export, answer a plaintext inference in-process,
# then report the outputs and whether torch (or quant) was ever imported there
_API_PROCESS = """
import asyncio, io, json, sys
import httpx, numpy as np
sys.path.insert(0, {helpers!r})
from server_helpers import auth, npy
from server import Settings, create_app

async def main():
    settings = Settings(data_dir={data!r}, token_file={tokens!r}, workers=1, allow_insecure_test_params=True,
                        operators=["alice"])
    app = create_app(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe") as http:
            files = {{name: open({export!r} + "/" + name, "rb").read() for name in ("manifest.json", "model.npz")}}
            import msgpack
            body = msgpack.packb(files)
            model = (await http.post("/models", content=body, headers={{**auth("alice"),
                     "Content-Type": "application/msgpack"}}, params={{"name": "mlp", "slots": 32,
                     "insecure_test_params": True}})).json()
            answer = await http.post(f"/models/{{model['id']}}/infer", content=npy(np.load({x!r})),
                                     headers=auth("bob"))
    finally:
        app.state.service.close()
    y = np.load(io.BytesIO(answer.content), allow_pickle=False)
    print(json.dumps({{"status": answer.status_code, "y": y.tolist(),
                      "imported": sorted(m for m in ("torch", "quant", "triton") if m in sys.modules)}}))

asyncio.run(main())
"""


def test_api_process_answers_plaintext_without_importing_torch(mlp_export, tmp_path, token_file):
    np.save(tmp_path / "x.npy", mlp_export["X"])
    code = _API_PROCESS.format(helpers=str(Path(__file__).parent), data=str(tmp_path / "data"),
                               tokens=str(token_file), export=str(mlp_export["dir"]), x=str(tmp_path / "x.npy"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 200 and report["imported"] == []
    # the worker ran QuantLinear's torch reference, the same fp32 arithmetic as the quantized torch model
    np.testing.assert_allclose(report["y"], mlp_export["expected"], rtol=1e-5, atol=1e-6)


def test_plaintext_worker_runs_quants_kernel_dispatch(mlp_export, monkeypatch):
    import torch

    import quant

    calls = []
    reference = quant.linear.reference_w4a16
    monkeypatch.setattr(quant.linear, "reference_w4a16", lambda x, *rest: calls.append(tuple(x.shape))
                        or reference(x, *rest))
    y = infer_plaintext(str(mlp_export["dir"]), mlp_export["X"].astype(np.float32))
    # both W4A16 layers went through QuantLinear's dispatch: the torch reference here, the Triton kernel on CUDA
    assert calls == ([] if torch.cuda.is_available() else [(9, 6), (9, 4)])
    np.testing.assert_allclose(y, mlp_export["expected"], rtol=1e-5, atol=1e-6)
