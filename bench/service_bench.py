"""REST round trip vs in-process for the same encrypted work at ring 2^14 (128-bit), and concurrent clients.

    PYTHONPATH=. .venv/bin/python bench/service_bench.py [--workload einsum|model|batch] [--repeats 10] [--clients 16]

Workloads: `einsum` is ij,j->i with a registered 64x128 plaintext W; `model` is one sample through a 64-32-10
square-activation MLP quantized to 4-bit weights by quant (random weights: this measures time, not accuracy),
registered from its integer export; `batch` is 512 samples through the same model's batched program (one
request: the samples in the slots, 64 ciphertexts up, 10 down). In-process: encrypt, einfhe.run, decrypt with one Context. REST: the client
(Client.einsum or EncryptedModel.infer) against `einfhe serve` (uvicorn, 2 worker processes) in a process of its
own on loopback, as it is deployed: encrypt, upload, run in a worker, answer inline, decrypt. Keys are generated and uploaded once before timing; the two
sides take turns call by call (so a change of load on the shared machine hits both) and are timed per call
(median). The overhead ratio is REST / in-process. Both sides run OpenMP with one thread (the service's workers
do by default; more threads on top of parallel workers oversubscribe the cores), and einfhe.run with one
thread (EINFHE_WORKERS=1, as in the service's workers).

Where the extra time goes: the client's serialization of the input and deserialization of the result (timed
here on the same ciphertexts), the worker's time beyond the computation (its jobs' recorded seconds minus the
in-process run: reading and deserializing the input, loading the plain operands, serializing the result), and
the rest: HTTP, the API process and the hand-off to the worker and back. For scale, an upload of the same input
that the API answers at once (a job for an unknown plan: 404 after reading the body) is timed too.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before openfhe loads: the same setting as the service's workers
os.environ.setdefault("EINFHE_WORKERS", "1")  # and their one thread per run: the same computation on both sides

import einfhe  # noqa: E402  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench.serving import einfhe_serve  # noqa: E402
from client import Client, EncryptedModel, NotFound  # noqa: E402

OPERATOR, TOKEN = "operator-token-0123456789", "bench-token-0123456789"


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _export_mlp(directory: Path) -> Path:
    """A random 64-32-10 square-activation MLP, quantized to W4A16 and exported as integers."""
    import torch
    from torch import nn

    import quant

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), quant.Square(), nn.Linear(32, 10))
    quant.quantize_(net, quant.W4A16(64))
    return quant.export_integer_model(net, directory, example_input=torch.rand(16, 64))


def _refused_upload(http, blob: bytes) -> None:
    """POST the input as a job for a plan that does not exist: the API reads the body, then answers 404."""
    try:
        http.request("POST", "/jobs", params={"plan_id": "none", "keyset_id": "none"}, content=blob,
                     headers={"Content-Type": "application/octet-stream"})
    except NotFound:
        return
    raise RuntimeError("the server accepted a job for a plan that does not exist")


class EinsumWorkload:
    """ij,j->i with a registered plaintext W (the einsum service)."""

    def __init__(self, rng: np.random.Generator, tmp: Path, export: Path | None = None) -> None:
        self.W, self.x = rng.standard_normal((64, 128)), rng.standard_normal(128)
        self.plan = einfhe.compile("ij,j->i", self.W, einfhe.cipher(self.x.shape))
        self.ctx = einfhe.Context.for_plan(self.plan)
        self.expected = self.W @ self.x
        print(f"einsum ij,j->i W{self.W.shape}  {self.ctx.params}  rotations={len(self.plan.rotations)}")

    def encrypt(self):
        """The input, encrypted in the plan's layout."""
        return einfhe.encrypt(self.ctx, self.x, self.plan.input_layout(1))

    def run(self, xe):
        """The plan on the encrypted input."""
        return einfhe.run(self.ctx, self.plan, self.W, xe)

    def decrypt(self, result) -> np.ndarray:
        """The decrypted result."""
        return einfhe.decrypt(self.ctx, result)

    def connect(self, url: str):
        """Register W as the tenant and return a callable running the einsum over REST."""
        client = Client(url, TOKEN, progress=False)
        client.register_operand("W", self.W)
        return client, lambda x=None: client.einsum("ij,j->i", "W", self.x if x is None else x)


class ModelWorkload:
    """One sample through a quantized MLP registered by the operator (EncryptedModel.infer)."""

    def __init__(self, rng: np.random.Generator, tmp: Path, export: Path | None = None) -> None:
        self.export = export or _export_mlp(tmp / "mlp")
        layers, n_features = einfhe.load_integer_model(self.export)
        self.model = einfhe.compile_model(layers, n_features)
        self.ctx = einfhe.Context.for_plan(self.model.plan)
        self.x = rng.uniform(0, 1, n_features)
        self.expected = self.decrypt(self.run(self.encrypt()))
        print(f"model 64-32-10 W4A16, one sample  {self.ctx.params}  rotations={len(self.model.plan.rotations)}")

    def encrypt(self):
        """The input, packed and encrypted in the program's layout."""
        return einfhe.encrypt(self.ctx, self.model.pack_input(self.x), self.model.input_layout)

    def run(self, xe):
        """The program on the encrypted input."""
        return einfhe.run(self.ctx, self.model.plan, *self.model.operands(xe))

    def decrypt(self, result) -> np.ndarray:
        """The decrypted, unpacked output."""
        return self.model.unpack_output(einfhe.decrypt(self.ctx, result))

    def connect(self, url: str):
        """Register the model (once, as the operator) and return a callable running one inference over REST."""
        if not hasattr(self, "_registered"):
            with Client(url, OPERATOR, progress=False) as operator:
                operator.register_model("mlp", self.export)
            self._registered = True
        model = EncryptedModel(url, "mlp", token=TOKEN, progress=False)
        return model, lambda x=None: model.infer(self.x if x is None else x)


class BatchWorkload(ModelWorkload):
    """512 samples in one request through the model's batched program (EncryptedModel.infer on a 2-D input)."""

    samples = 512

    def __init__(self, rng: np.random.Generator, tmp: Path, export: Path | None = None) -> None:
        self.export = export or _export_mlp(tmp / "mlp")
        layers, n_features = einfhe.load_integer_model(self.export)
        self.model = einfhe.compile_model(layers, n_features, batch=8192, slots=8192)  # as the service compiles it
        self.ctx = einfhe.Context.for_plan(self.model.plan)
        self.x = rng.uniform(0, 1, (self.samples, n_features))
        self.expected = self.decrypt(self.run(self.encrypt()))
        print(f"model 64-32-10 W4A16, batch of {self.samples}  {self.ctx.params}  "
              f"cts in/out={self.model.plan.cts_in}/{self.model.plan.cts_out}")

    def encrypt(self):
        """The samples, zero-padded to the program's batch (as the client does), packed and encrypted."""
        padded = np.zeros((self.model.batch, self.x.shape[1]))
        padded[:self.samples] = self.x
        return einfhe.encrypt(self.ctx, self.model.pack_input(padded), self.model.input_layout)

    def decrypt(self, result) -> np.ndarray:
        """The decrypted outputs of the batch's samples."""
        return self.model.unpack_output(einfhe.decrypt(self.ctx, result))[:self.samples]


WORKLOADS = {"einsum": EinsumWorkload, "model": ModelWorkload, "batch": BatchWorkload}


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=tuple(WORKLOADS), default="einsum")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model-export", type=Path, default=None,
                        help="a quant.export_integer_model directory to serve instead of the random MLP made here with "
                             "torch (for a machine without torch: make it elsewhere with _export_mlp)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work = WORKLOADS[args.workload](rng, tmp, args.model_export)
        tolerance = 1e-3 * max(1.0, float(np.abs(work.expected).max()))
        sizes = {}

        def in_process() -> dict[str, float]:
            """One in-process call, timed by phase, and the client's (de)serialization of its ciphertexts."""
            times = {"encrypt": _seconds(lambda: sizes.update(xe=work.encrypt()))}
            times["run"] = _seconds(lambda: sizes.update(result=work.run(sizes["xe"])))
            times["decrypt"] = _seconds(lambda: sizes.update(y=work.decrypt(sizes["result"])))
            np.testing.assert_allclose(sizes["y"], work.expected, atol=tolerance)
            times["total"] = times["encrypt"] + times["run"] + times["decrypt"]
            times["serialize"] = _seconds(lambda: sizes.update(blob=einfhe.tensor_to_bytes(work.ctx, sizes["xe"])))
            sizes["answer"] = einfhe.tensor_to_bytes(work.ctx, sizes["result"])
            times["deserialize"] = _seconds(lambda: einfhe.tensor_from_bytes(work.ctx, sizes["answer"]))
            return times

        tokens = tmp / "tokens.txt"
        tokens.write_text(f"operator:{OPERATOR}\nbench:{TOKEN}\n")
        with einfhe_serve(tmp / "data", tokens, workers=2) as (_, url):
            session, call = work.connect(url)
            with session:
                start = time.perf_counter()
                call()  # fetches requirements or plans, generates keys, uploads them once
                first = time.perf_counter() - start
                http = session.http if isinstance(session, Client) else session.client.http
                keyset = http.request("GET", "/keysets").json()[0]
                turns = []
                for _ in range(args.repeats):  # the two sides take turns
                    turn = in_process()
                    turn["rest"] = _seconds(lambda: sizes.update(rest=call()))  # the check below is not timed
                    np.testing.assert_allclose(sizes["rest"], work.expected, atol=tolerance)
                    turn["upload"] = _seconds(lambda: _refused_upload(http, sizes["blob"]))
                    turns.append(turn)
                ms = {name: 1e3 * statistics.median(turn[name] for turn in turns) for name in turns[0]}
                jobs = sorted(http.request("GET", "/jobs").json(), key=lambda job: job["created"])[-args.repeats:]
                ms["worker"] = 1e3 * statistics.median(job["seconds"] for job in jobs)

            def one_client(seed: int) -> bool:
                v = work.x + np.random.default_rng(seed).uniform(-1e-3, 1e-3, work.x.shape)
                other, run = work.connect(url)
                with other:
                    return bool(np.allclose(run(v), work.expected, atol=tolerance * 10))

            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(one_client, range(args.clients)))
            concurrent = time.perf_counter() - start

    local, remote = ms["total"], ms["rest"]
    client_side, beyond_run = ms["serialize"] + ms["deserialize"], ms["worker"] - ms["run"]
    print(f"in-process encrypt+run+decrypt   median {local:8.1f} ms  ({args.repeats} runs: encrypt {ms['encrypt']:.1f}, "
          f"run {ms['run']:.1f}, decrypt {ms['decrypt']:.1f} ms)")
    print(f"REST round trip (keys cached)    median {remote:8.1f} ms  ({args.repeats} runs, taking turns with the above)")
    print(f"REST overhead ratio              {remote / local:8.3f}x  ({(remote / local - 1) * 100:+.1f}%)")
    print(f"  the extra {remote - local:.1f} ms: client serializes the input {ms['serialize']:.1f} + deserializes "
          f"the result {ms['deserialize']:.1f} ms ({len(sizes['blob']) / 2**10:.0f} KiB up, "
          f"{len(sizes['answer']) / 2**10:.0f} KiB down);")
    print(f"  the worker beyond the run {beyond_run:.1f} ms (its jobs' median {ms['worker']:.1f} ms: reads and "
          f"deserializes the input, loads the plain operands, serializes the result);")
    print(f"  HTTP, the API process and the hand-offs to the worker and back {remote - local - client_side - beyond_run:.1f}"
          f" ms (for scale: the same upload answered at once takes {ms['upload']:.1f} ms)")
    print(f"first REST call (requirements + keygen + key upload {keyset['size'] / 2**20:.1f} MiB): {first:.2f} s")
    print(f"{args.clients} concurrent clients (own keys each): {sum(results)}/{len(results)} correct "
          f"in {concurrent:.1f} s")


if __name__ == "__main__":
    main()
