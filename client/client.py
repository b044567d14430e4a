"""The einfhe service client: register operands, plan, upload evaluation keys once, run encrypted einsums.

    client = Client("http://127.0.0.1:8000", token)
    client.register_operand("W", W)                       # plaintext weights, kept by the server
    y = client.einsum("ij,j->i", "W", x)                  # x is encrypted here; y decrypted here

Keys are generated on the client and never leave it; only evaluation keys are uploaded, once per parameter set
(again only when a later plan needs rotations the uploaded set lacks).

`Client(..., noise_flooding=True)` is for results that leave the client: decryption adds OpenFHE's flooding noise
(einfhe.params.flooding; docs/noise-flooding.md) so that the decrypted values reveal nothing about the secret key. Each
plan then gets 59-bit parameters (`Parameters.for_noise_flooding`) and, on first use, a noise-measuring run under
throwaway keys before its own flooding key set; later calls reuse that key set and its estimate.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import io
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgpack
import numpy as np
from tqdm import tqdm

from einfhe import (
    Context, Layout, NoiseFlooding, Parameters, Plan, decrypt, encrypt, evaluation_keys_to_bytes, measure_noise,
    tensor_from_bytes, tensor_to_bytes,
)

from .errors import JobFailed, NotFound
from .http import Http
from .key_store import KeyStore

__all__ = ["Client", "PlanInfo"]

_FINAL = ("succeeded", "failed")
_MIN_POLL_SECONDS = 0.1
# bits added to the measured noise: later inputs may carry up to twice the noise of the one that was measured
NOISE_MARGIN_BITS = 1.0


@dataclass(frozen=True)
class PlanInfo:
    """A plan the server compiled, with its id and parameters."""

    id: str
    plan: Plan
    params: Parameters
    info: dict


class Client:
    """A tenant's connection to an einfhe server (its keys stay in this object)."""

    def __init__(self, url: str, token: str, *, timeout: float = 120.0, retries: int = 3, progress: bool = True,
                 poll_seconds: float = 10.0, noise_flooding: bool = False, keys: str | Path | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.http = Http(url, token, timeout=timeout + poll_seconds, retries=retries, transport=transport)
        self.progress = progress
        self.poll_seconds = poll_seconds
        self.noise_flooding = noise_flooding
        self._plans: dict[str, PlanInfo] = {}
        self._contexts: dict[str, tuple[Context, str, tuple[Plan, ...]]] = {}  # fingerprint -> ctx, keyset, plans
        self._flooded: dict[str, tuple[Context, str]] = {}  # plan id -> flooding ctx, its key set
        self.keys = KeyStore(keys) if keys is not None else None  # keys reused across processes

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- resources --------------------------------------------------------------------------------
    def register_operand(self, name: str, array) -> dict:
        """Register (or replace) a named plaintext operand on the server."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        return self.http.request("PUT", f"/operands/{name}", content=buffer.getvalue(),
                                 headers={"Content-Type": "application/octet-stream"}).json()

    def register_model(self, name: str, directory, *, slots: int = 8192, insecure_test_params: bool = False,
                       noise_flooding: bool = False, tokens: int | None = None) -> dict:
        """Register quant's artifact (`quant.export`) or integer export in `directory` (operators only) as a gzipped
        tar; returns the model. `noise_flooding` compiles it on the parameters flooding clients need
        (Parameters.for_noise_flooding); `tokens`: the token count a transformer encoder's encrypted program takes
        (None: the server's default)."""
        artifact = (Path(directory) / "graph.json").exists()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for filename in ("manifest.json", "graph.json", "weights.safetensors") if artifact else \
                    ("manifest.json", "model.npz"):
                archive.add(Path(directory) / filename, arcname=filename)
        params = {"name": name, "slots": slots, "insecure_test_params": insecure_test_params,
                  "noise_flooding": noise_flooding, **({} if tokens is None else {"tokens": tokens})}
        return self.http.request("POST", "/models", params=params, content=buffer.getvalue(),
                                 headers={"Content-Type": "application/gzip"}).json()

    def plan(self, spec: str, *operands, slots: int | None = None, params: Parameters | None = None,
             key_budget: int | None = None, upload_budget: int | None = None, bound: float | None = None) -> PlanInfo:
        """Have the server plan `spec` (strings name registered operands, arrays or shapes are cipher operands)
        within the key and upload budgets in bytes (None: the server's defaults; a plan over them is refused with
        code `over_budget`); with noise flooding and no `params`, on flooding parameters for the plan's depth.
        `bound` declares the largest |entry| of every cipher operand (a public range: the server sees it), which lets
        the server's default ring choice (`slots` None) take the small ring where the results stay safe in it."""
        budgets = {name: int(value) for name, value in (("key_budget", key_budget), ("upload_budget", upload_budget))
                   if value is not None}
        if self.noise_flooding and params is None:
            first = self._plan(spec, operands, slots, None, budgets, bound).plan
            params = Parameters.for_noise_flooding(first.depth, first.slots)
        return self._plan(spec, operands, slots, params, budgets, bound)

    def _plan(self, spec: str, operands, slots: int | None, params: Parameters | None, budgets: dict,
              bound: float | None = None) -> PlanInfo:
        """POST /plans once per distinct request."""
        declared = {} if bound is None else {"bound": float(bound)}
        refs = [{"plain": op} if isinstance(op, str) else {"cipher": [int(n) for n in np.shape(op)], **declared}
                for op in operands]
        body = {"spec": spec, "operands": refs, "slots": slots,
                "params": params.to_json() if params is not None else None, **budgets}
        key = json.dumps(body, sort_keys=True)
        if key not in self._plans:
            info = self.http.request("POST", "/plans", json=body, idempotent=True).json()
            self._plans[key] = PlanInfo(info["id"], Plan.from_json(json.dumps(info["plan"])),
                                        Parameters.from_json(info["params"]), info)
        return self._plans[key]

    def context_for(self, plan: PlanInfo) -> tuple[Context, str]:
        """The local context for the plan's parameters and the id of its uploaded key set (made once)."""
        fingerprint = plan.params.fingerprint().hex()
        cached = self._contexts.get(fingerprint) or self._saved_context(fingerprint)
        if cached is not None and set(plan.plan.rotations) <= set(cached[0].rotations):
            return cached[0], cached[1]
        plans = (cached[2] if cached else ()) + (plan.plan,)
        ctx = Context.for_plan(*plans, params=plan.params)
        keyset_id = self.upload_keys(ctx)
        self._contexts[fingerprint] = (ctx, keyset_id, plans)
        if self.keys is not None:
            self.keys.save(fingerprint, ctx, keyset_id)
        return ctx, keyset_id

    def _saved_context(self, fingerprint: str) -> tuple[Context, str, tuple[Plan, ...]] | None:
        """The context `keys=` saved for these parameters, with its key set (uploaded again when the server no
        longer holds it), or None."""
        saved = self.keys.load(fingerprint) if self.keys is not None else None
        if saved is None:
            return None
        ctx, keyset_id = saved
        try:
            self.http.request("GET", f"/keysets/{keyset_id}")
        except NotFound:  # deleted, or expired while idle: the same keys again
            keyset_id = self.upload_keys(ctx)
            self.keys.save(fingerprint, ctx, keyset_id)
        self._contexts[fingerprint] = (ctx, keyset_id, ())
        return self._contexts[fingerprint]

    def delete_keys(self, keyset_id: str) -> None:
        """Delete an uploaded key set from the server (refused while one of its jobs runs); a later call that
        needs keys for those parameters makes and uploads new ones."""
        self.http.request("DELETE", f"/keysets/{keyset_id}")
        self._contexts = {fp: entry for fp, entry in self._contexts.items() if entry[1] != keyset_id}

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job and its stored result from the server."""
        self.http.request("DELETE", f"/jobs/{job_id}")

    def upload_keys(self, ctx: Context) -> str:
        """Upload the context's evaluation keys (never its secret key) and return the key set's id."""
        response = self.http.request("POST", "/keysets", content=evaluation_keys_to_bytes(ctx), idempotent=True,
                                     headers={"Content-Type": "application/octet-stream"})
        return response.json()["id"]

    # -- jobs ---------------------------------------------------------------------------------------
    def submit(self, plan_id: str, keyset_id: str, blobs: list[bytes]) -> dict:
        """Submit ciphertext blobs (one per cipher operand) for a plan; returns the queued job."""
        response = self._post_job("/jobs", {"plan_id": plan_id, "keyset_id": keyset_id}, blobs, wait=0)
        return response.json()

    def run_job(self, path: str, params: dict, blobs: list[bytes], timeout: float | None = None) -> bytes:
        """Submit a job to `path` and return its result blob: inline when it finishes within the first wait (the
        server then does not keep it), else by polling (with a progress bar) and fetching the result."""
        response = self._post_job(path, {**params, "keep": "false"}, blobs, wait=self.poll_seconds)
        if response.status_code == 200:
            return response.content
        job = response.json()
        self.wait(job["id"], timeout)
        return self.result(job["id"])

    def _post_job(self, path: str, params: dict, blobs: list[bytes], wait: float) -> httpx.Response:
        """POST ciphertext blobs: one as application/octet-stream, several as one msgpack array."""
        if len(blobs) == 1:
            content, media = blobs[0], "application/octet-stream"
        else:
            content, media = msgpack.packb(list(blobs), use_bin_type=True), "application/msgpack"
        return self.http.request("POST", path, params={**params, "wait": wait}, content=content,
                                 headers={"Content-Type": media})

    def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """Wait for a job to finish (long polls; a progress bar once it runs long); raise JobFailed on failure."""
        start = time.monotonic()
        job = self.http.request("GET", f"/jobs/{job_id}", params={"wait": 0.5}).json()
        bar = None
        try:
            while job["status"] not in _FINAL:
                elapsed = time.monotonic() - start
                if timeout is not None and elapsed > timeout:
                    raise TimeoutError(f"job {job_id} still {job['status']} after {elapsed:.0f}s")
                if bar is None:
                    bar = tqdm(desc=f"job {job_id[:8]}", unit="poll", disable=not self.progress, leave=False)
                bar.set_postfix(status=job["status"], elapsed=f"{elapsed:.0f}s")
                bar.update(1)
                asked = time.monotonic()
                job = self.http.request("GET", f"/jobs/{job_id}", params={"wait": self.poll_seconds}).json()
                if job["status"] not in _FINAL and time.monotonic() - asked < _MIN_POLL_SECONDS:
                    time.sleep(_MIN_POLL_SECONDS)  # a server that answers long polls at once is not hammered
        finally:
            if bar is not None:
                bar.close()
        if job["status"] == "failed":
            error = job.get("error") or {"code": "job_failed", "message": "no detail"}
            raise JobFailed(error["code"], error["message"])
        return job

    def result(self, job_id: str) -> bytes:
        """The encrypted result blob of a finished job."""
        return self.http.request("GET", f"/jobs/{job_id}/result").content

    def compute(self, plan: PlanInfo, path: str, query: dict, inputs: list[tuple[np.ndarray, Layout]],
                timeout: float | None = None) -> np.ndarray:
        """Encrypt `inputs` (array, layout) for the plan, run the job at `path` with the plan's key set, decrypt.

        With noise flooding, the plan's first call runs the job twice: under a noise-measuring context, then under
        a flooding one made from that measurement (plus NOISE_MARGIN_BITS), which later calls reuse."""
        if not self.noise_flooding:
            ctx, keyset_id = self.context_for(plan)
        elif plan.id in self._flooded:
            ctx, keyset_id = self._flooded[plan.id]
        else:
            probe = Context.for_plan(plan.plan, params=plan.params, flooding=NoiseFlooding())
            noise = measure_noise(probe, self._job(probe, self.upload_keys(probe), path, query, inputs, timeout))
            ctx = Context.for_plan(plan.plan, params=plan.params,
                                   flooding=NoiseFlooding(estimate=noise + NOISE_MARGIN_BITS))
            keyset_id = self.upload_keys(ctx)
            self._flooded[plan.id] = (ctx, keyset_id)
        return decrypt(ctx, self._job(ctx, keyset_id, path, query, inputs, timeout))

    def _job(self, ctx: Context, keyset_id: str, path: str, query: dict, inputs, timeout: float | None):
        """Encrypt the inputs under `ctx`, run the job, and load its encrypted result."""
        blobs = [tensor_to_bytes(ctx, encrypt(ctx, values, layout)) for values, layout in inputs]
        result = self.run_job(path, {**query, "keyset_id": keyset_id}, blobs, timeout)
        return tensor_from_bytes(ctx, result, for_arithmetic=False)  # only decrypted

    def einsum(self, spec: str, *operands, slots: int | None = None, params: Parameters | None = None,
               timeout: float | None = None, bound: float | None = None) -> np.ndarray:
        """numpy.einsum on the server: arrays are encrypted here, strings name registered plaintext operands;
        `bound` as in `plan`."""
        plan = self.plan(spec, *operands, slots=slots, params=params, bound=bound)
        inputs = [(operands[op.operand], op.layout) for op in plan.plan.cipher_inputs]
        return self.compute(plan, "/jobs", {"plan_id": plan.id}, inputs, timeout)
