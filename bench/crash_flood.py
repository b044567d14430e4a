"""The attack bench's flood (bench/attack_bench.py): forged ciphertexts that crash OpenFHE, found by mutating a valid
one, queued by an attacker tenant from a process of its own while a victim tenant's einsums are timed.

The attacker is a separate client process, as another tenant is: in the victim's interpreter its requests would
take turns with the victim's encryption on one GIL, which the server cannot help. Its blobs are forged before the
flood starts, so what the victim's requests share the machine with is the server's work, not the forging.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

import einfhe
from client import Client
from einfhe.crypto.blobs import HEADER_SIZE, pack_blob

__all__ = ["Flood", "find_crashers", "forge"]

_ROOT = str(Path(__file__).resolve().parents[1])

_CRASH_SEARCH = """
import sys
import einfhe
import numpy as np
from bench.crash_flood import forge
ctx, good = einfhe.load_context(sys.argv[1]), open(sys.argv[2], "rb").read()
plan, W = einfhe.Plan.from_json(open(sys.argv[3]).read()), np.load(sys.argv[4])
for seed in range(int(sys.argv[5]), int(sys.argv[6])):
    print(seed, flush=True)
    try:
        einfhe.run(ctx, plan, W, einfhe.tensor_from_bytes(ctx, forge(good, seed)))
    except Exception:
        pass
"""

_ATTACKER = """
import json, pathlib, sys, time
import httpx
url, token, query, folder, pause = sys.argv[1:6]
blobs = [path.read_bytes() for path in sorted(pathlib.Path(folder).iterdir())]
with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as http:
    print("ready", flush=True)
    sys.stdin.readline()
    for blob in blobs:
        response = http.post(query, content=blob, headers={"Content-Type": "application/octet-stream"})
        print(json.dumps([response.status_code, response.json().get("id") if response.status_code == 202 else None]),
              flush=True)
        time.sleep(float(pause))
"""


def forge(good: bytes, seed: int) -> bytes:
    """Mutation `seed` of a tensor blob: one to four bytes among the first 4 KiB of its first ciphertext (where
    OpenFHE's serialization keeps sizes and parameters) set at random, the checksum recomputed (the CRC is no MAC)."""
    rng = random.Random(seed)
    payload = bytearray(good[HEADER_SIZE:])
    (head,) = struct.unpack_from("<I", payload, 0)
    first = 8 + head + 8  # the first ciphertext's bytes: OpenFHE's metadata (sizes, levels, parameters) leads
    for _ in range(rng.randint(1, 4)):
        position = first + rng.randrange(4096)
        payload[position] = rng.randrange(256)
    return pack_blob("tensor", good[8:24], bytes(payload))


def find_crashers(ctx, good: bytes, plan_json: str, W: np.ndarray, budget: int, want: int) -> list[int]:
    """Seeds of `forge` whose blob kills a process that loads and runs it like a worker does (found by running
    mutations in a child process until it dies, then going on in a new one), at most `budget` tried."""
    found, seed = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        einfhe.save_context(ctx, tmp / "ctx")
        (tmp / "good").write_bytes(good)
        (tmp / "plan.json").write_text(plan_json)
        np.save(tmp / "W.npy", W)
        env = {**os.environ, "PYTHONPATH": _ROOT}
        while seed < budget and len(found) < want:
            child = subprocess.run([sys.executable, "-c", _CRASH_SEARCH, str(tmp / "ctx"), str(tmp / "good"),
                                    str(tmp / "plan.json"), str(tmp / "W.npy"), str(seed), str(budget)],
                                   capture_output=True, text=True, env=env, timeout=600)
            tried = [int(line) for line in child.stdout.split()]
            if child.returncode >= 0 or not tried:  # went through without dying
                break
            found.append(tried[-1])
            seed = tried[-1] + 1
    return found


class _Attacker:
    """A tenant with its keys uploaded and a valid ciphertext for the victim's einsum, ready to forge from."""

    def __init__(self, url: str, token: str, W: np.ndarray, rng: np.random.Generator) -> None:
        self.token = token
        self.client = Client(url, token, progress=False)
        self.client.register_operand("W", W)
        self.plan = self.client.plan("ij,j->i", "W", np.zeros(W.shape[1]))
        self.ctx, keyset_id = self.client.context_for(self.plan)
        self.good = einfhe.tensor_to_bytes(self.ctx, einfhe.encrypt(self.ctx, rng.standard_normal(W.shape[1]),
                                                                    self.plan.plan.input_layout(1)))
        self.job_query = f"/jobs?plan_id={self.plan.id}&keyset_id={keyset_id}"
        self.http = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        """Close its connections."""
        self.client.close()
        self.http.close()


class Flood:
    """A victim and attacker tenants on one server: the victim's einsums timed on the quiet server and during floods
    of an attacker's worker-crashing jobs, round after round (a fresh attacker each round: the last one is
    quarantined), and what became of those jobs. `attacker` (tokens["attacker"]) is the first round's."""

    def __init__(self, url: str, tokens: dict[str, str], rng: np.random.Generator) -> None:
        self.url, self.tokens, self.rng = url, tokens, rng
        self.W = rng.standard_normal((64, 128))
        self.victim = Client(url, tokens["victim"], progress=False)
        self.victim.register_operand("W", self.W)
        self.lost = 0
        self.statuses: list[int] = []
        self.victim_call()  # keys made and uploaded
        self.attacker = _Attacker(url, tokens["attacker"], self.W, rng)
        self._victim_http = httpx.Client(base_url=url, timeout=120,
                                         headers={"Authorization": f"Bearer {tokens['victim']}"})

    def victim_call(self) -> float:
        """One victim einsum, checked against numpy (a wrong or failed answer counts as lost); its seconds."""
        x = self.rng.standard_normal(128)
        started = time.monotonic()
        try:
            ok = np.allclose(self.victim.einsum("ij,j->i", "W", x), self.W @ x, atol=1e-3)
        except Exception as exc:  # noqa: BLE001 -- counted as lost, shown
            print(f"  victim request failed: {exc!r}")
            ok = False
        self.lost += not ok
        return time.monotonic() - started

    def _flood(self, attacker: _Attacker, requests: int, flood: int,
               crashers: list[int]) -> tuple[list, list, float, float]:
        """The victim's `requests` einsums while `attacker`'s process submits `flood` crashing jobs, one every
        50 ms: their latencies, the attacker's answers (status, job id), and when the victim's requests began and
        ended (server clock)."""
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(flood):
                Path(tmp, f"{i:04d}").write_bytes(forge(attacker.good, crashers[i % len(crashers)]))
            process = subprocess.Popen([sys.executable, "-c", _ATTACKER, self.url, attacker.token, attacker.job_query,
                                        tmp, "0.05"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       env={**os.environ, "PYTHONPATH": _ROOT})
            assert process.stdout.readline().strip() == "ready"
            process.stdin.write("go\n")
            process.stdin.flush()
            started = time.time()
            latencies = [self.victim_call() for _ in range(requests)]
            ended = time.time()
            answers = [json.loads(line) for line in process.communicate(timeout=600)[0].splitlines()]
        return latencies, answers, started, ended

    def run(self, requests: int, flood: int, crashers: list[int], rounds: int = 1) -> dict:
        """`rounds` times: `requests` victim einsums on the quiet server, then as many while a fresh attacker's
        process submits `flood` crashing jobs; the latencies (pooled, and the p95 ratio of each round), the victim's
        jobs' seconds in a worker, the attackers' answers, how their accepted jobs ended and how many of them ended
        while the victim's requests ran."""
        quiet, flooding, ratios, codes, endings, during = [], [], [], {}, {}, 0
        for number in range(rounds):
            attacker = self.attacker if number == 0 else \
                _Attacker(self.url, self.tokens[f"attacker-{number}"], self.W, self.rng)
            calm = [self.victim_call() for _ in range(requests)]
            latencies, answers, started, ended = self._flood(attacker, requests, flood, crashers)
            quiet += calm
            flooding += latencies
            ratios.append(float(np.quantile(latencies, 0.95) / np.quantile(calm, 0.95)))
            for status, job_id in answers:
                self.statuses.append(status)
                codes[status] = codes.get(status, 0) + 1
                if job_id is None:
                    continue
                job = attacker.http.get(f"/jobs/{job_id}", params={"wait": 30}).json()
                key = job["error"]["code"] if job.get("error") else job["status"]
                endings[key] = endings.get(key, 0) + 1
                during += started <= (job["finished"] or 0) <= ended
            if attacker is not self.attacker:
                attacker.close()
        jobs = sorted(self._victim_http.get("/jobs").json(), key=lambda job: job["created"])
        seconds = np.array([job["seconds"] for job in jobs[-2 * requests * rounds:]]).reshape(rounds, 2, requests)
        return {"quiet": quiet, "flood": flooding, "ratios": ratios, "answers": codes, "endings": endings,
                "ended_during": during, "worker_quiet": list(seconds[:, 0].ravel()),
                "worker_flood": list(seconds[:, 1].ravel())}

    def close(self) -> None:
        """Close the tenants' connections."""
        self.victim.close()
        self.attacker.close()
        self._victim_http.close()
