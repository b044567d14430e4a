"""Attacks on `einfhe serve` over loopback (issue 18), bounded: what each got back, the API and worker processes'
peak memory, and a victim tenant's latency during a flood of worker-crashing jobs beside its latency on the quiet
server, in the same run.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/attack_bench.py [--victim-requests 20] [--flood 12]
        [--servers spawn:fifo forkserver:fair]

Attacks, each on the same server (2 workers, header and body timeouts of 2 s): a msgpack job body of 255 MiB of
2-byte parts; a msgpack model upload of 16 M tiny entries; 256 MiB of text/plain to /plans without a token; a
64 MiB Authorization header; a bz2 tar whose GNU long-name header declares 1 GiB; a gzip tar whose pax header
declares 1 GiB; a .npy header declaring 10^6 x 10^6 float64; a 64 MB int8 operand (stored size, blob gone after DELETE);
headers and a body sent too slowly; a 405 (Allow); then the flood: the attacker queues forged ciphertexts (checksum
recomputed) that crash OpenFHE, found by mutating a valid one in a local child process until one kills it (about
1 in 100 of `forge`'s mutations), while the victim sends einsums. The flood runs first on a server as it was
before issue 18 (workers spawned as fresh interpreters, jobs in arrival order: EINFHE_WORKER_START=spawn,
EINFHE_SCHEDULING=fifo; quarantine on), the baseline, then on a server with the defaults, in the same run.
Targets (the issue's): API process peak RSS under 1 GiB, victim p95 during the flood at most 2x quiet, no 5xx,
nothing acknowledged lost.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402,F401  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import bz2  # noqa: E402
import io  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.serving import MemorySampler, einfhe_serve, peak_rss  # noqa: E402
from client import Client  # noqa: E402

_MIB = 1 << 20
TOKENS = {"victim": "victim-token-0123456789", "attacker": "attacker-token-0123456789",
          "operator": "operator-token-0123456789"}


def _raw(url: str, head: bytes, body_chunks=(), pause: float = 0.0) -> tuple[int, float]:
    """Send a raw request (headers, then body chunks with `pause` between them, stopping when the server closes)
    and return the status it answered (0: none) and the seconds until the server closed the connection."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                sock.sendall(chunk)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except (ConnectionResetError, socket.timeout):
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - started


def _request_head(method: str, path: str, length: int, content_type: str, token: str | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: einfhe", f"Content-Length: {length}", f"Content-Type: {content_type}"]
    lines += [f"Authorization: Bearer {token}"] if token else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunks(total: int, piece: bytes):
    """`total` bytes as repeats of a 1 MiB block built from `piece`."""
    block = (piece * (_MIB // len(piece) + 1))[:_MIB]
    for _ in range(total // _MIB):
        yield block


def _tar_bomb(kind: bytes, compress) -> bytes:
    """A compressed tar whose first header declares a 1 GiB record of `kind`, followed by 256 MiB of zeros (what
    follows the header does not matter to a server that refuses at the header; it bounds this bench's time)."""
    info = tarfile.TarInfo("././@LongLink")
    info.size, info.type = 1 << 30, kind
    compressor = compress()
    out = [compressor.compress(info.tobuf(format=tarfile.USTAR_FORMAT))]
    zeros = bytes(_MIB)
    out += [compressor.compress(zeros) for _ in range(256)]
    return b"".join(out) + compressor.flush()


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    header = repr({"descr": "<f8", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64)


_CRASH_SEARCH = """
import sys
import einfhe
import numpy as np
from bench.attack_bench import forge
ctx, good = einfhe.load_context(sys.argv[1]), open(sys.argv[2], "rb").read()
plan, W = einfhe.Plan.from_json(open(sys.argv[3]).read()), np.load(sys.argv[4])
for seed in range(int(sys.argv[5]), int(sys.argv[6])):
    print(seed, flush=True)
    try:
        einfhe.run(ctx, plan, W, einfhe.tensor_from_bytes(ctx, forge(good, seed)))
    except Exception:
        pass
"""


def forge(good: bytes, seed: int) -> bytes:
    """Mutation `seed` of a tensor blob: one to four bytes among the first 4 KiB of its first ciphertext (where
    OpenFHE's serialization keeps sizes and parameters) set at random, the checksum recomputed (the CRC is no MAC)."""
    import random

    from einfhe.crypto.blobs import HEADER_SIZE, pack_blob

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
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
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


class _Flood:
    """A victim and an attacker tenant on one server: the victim's einsums timed on the quiet server and during a
    flood of the attacker's worker-crashing jobs, and what became of those jobs."""

    def __init__(self, url: str, rng: np.random.Generator) -> None:
        self.rng = rng
        self.W = rng.standard_normal((64, 128))
        self.victim = Client(url, TOKENS["victim"], progress=False)
        self.attacker = Client(url, TOKENS["attacker"], progress=False)
        self.lost = 0
        self.statuses: list[int] = []
        for client in (self.victim, self.attacker):
            client.register_operand("W", self.W)
        self.victim_call()  # keys made and uploaded
        self.plan = self.attacker.plan("ij,j->i", "W", np.zeros(128))
        self.ctx, keyset_id = self.attacker.context_for(self.plan)
        self.good = einfhe.tensor_to_bytes(self.ctx, einfhe.encrypt(self.ctx, rng.standard_normal(128),
                                                                    self.plan.plan.input_layout(1)))
        self.job_query = f"/jobs?plan_id={self.plan.id}&keyset_id={keyset_id}"
        self.http = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKENS['attacker']}"})

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

    def run(self, requests: int, flood: int, crashers: list[int]) -> dict:
        """`requests` victim einsums on the quiet server, then as many while the attacker submits `flood` crashing
        jobs (one every 50 ms); the latencies, the attacker's answers and how its accepted jobs ended."""
        quiet = [self.victim_call() for _ in range(requests)]
        answers: dict[int, int] = {}
        accepted: list[str] = []

        def attack() -> None:
            for i in range(flood):
                blob = forge(self.good, crashers[i % len(crashers)])
                response = self.http.post(self.job_query, content=blob,
                                          headers={"Content-Type": "application/octet-stream"})
                self.statuses.append(response.status_code)
                answers[response.status_code] = answers.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                time.sleep(0.05)

        attacker = threading.Thread(target=attack)
        attacker.start()
        flooding = [self.victim_call() for _ in range(requests)]
        attacker.join()
        endings: dict[str, int] = {}
        for job_id in accepted:
            job = self.http.get(f"/jobs/{job_id}", params={"wait": 30}).json()
            key = job["error"]["code"] if job.get("error") else job["status"]
            endings[key] = endings.get(key, 0) + 1
        return {"quiet": quiet, "flood": flooding, "answers": answers, "endings": endings}

    def close(self) -> None:
        """Close the tenants' connections."""
        for client in (self.victim, self.attacker):
            client.close()
        self.http.close()


def _attacks(url: str, data_dir: Path, flood: _Flood, record) -> None:
    """Every attack but the flood, each answer passed to `record(attack, status, note)`."""
    http = flood.http
    operator = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKENS['operator']}"})
    n = 255 * _MIB // 4
    body = b"\xdd" + struct.pack(">I", n) + b"\xc4\x02ab" * n
    record("POST /jobs msgpack, 255 MiB of 2-byte parts",
           http.post(flood.job_query, content=body, headers={"Content-Type": "application/msgpack"}).status_code)
    n = 16 * (1 << 20)
    body = b"\xdf" + struct.pack(">I", n) + b"\xa1a\xc0" * n
    del n
    record("POST /models msgpack, 16 M tiny entries", operator.post(
        "/models?name=m1", content=body, headers={"Content-Type": "application/msgpack"}).status_code)
    del body
    status, seconds = _raw(url, _request_head("POST", "/plans", 256 * _MIB, "text/plain"), _chunks(256 * _MIB, b"x"))
    record("POST /plans, no token, 256 MiB text/plain", status, f"connection closed after {seconds:.1f} s")
    status, seconds = _raw(url, b"GET /health HTTP/1.1\r\nHost: einfhe\r\nAuthorization: Bearer ",
                           _chunks(64 * _MIB, b"a"))
    record("GET /health with a 64 MiB Authorization header", status, f"closed after {seconds:.1f} s")
    for name, kind, compress, media in (("bz2 tar, GNU long name of 1 GiB", tarfile.GNUTYPE_LONGNAME,
                                         bz2.BZ2Compressor, "application/x-tar"),
                                        ("gzip tar, pax header of 1 GiB", tarfile.XHDTYPE,
                                         lambda: zlib.compressobj(wbits=31), "application/gzip")):
        bomb = _tar_bomb(kind, compress)
        started = time.monotonic()
        response = operator.post("/models?name=m2", content=bomb, headers={"Content-Type": media})
        record(f"POST /models {name} ({len(bomb) // 1024} KiB)", response.status_code,
               f"{time.monotonic() - started:.2f} s, {response.json()['error']['code']}")
    operator.close()
    response = http.put("/operands/big", content=_npy_claiming((10**6, 10**6)),
                        headers={"Content-Type": "application/octet-stream"})
    record("PUT /operands .npy declaring 10^6 x 10^6 float64", response.status_code, response.json()["error"]["code"])
    int8 = io.BytesIO()
    np.save(int8, np.ones(64_000_000, dtype=np.int8))
    response = http.put("/operands/big8", content=int8.getvalue(), headers={"Content-Type": "application/octet-stream"})
    blobs = data_dir / "blobs" / "operands"
    stored = sum(p.stat().st_size for p in blobs.iterdir())
    deleted = http.delete("/operands/big8").status_code
    after = sum(p.stat().st_size for p in blobs.iterdir())
    record("PUT /operands 64 MB int8, then DELETE", response.status_code,
           f"stored {stored / _MIB:.0f} MiB as {response.json().get('dtype')}; DELETE {deleted}, "
           f"{after / _MIB:.0f} MiB left")
    status, seconds = _raw(url, b"GET /health HTTP/1.1\r\nHost: einfhe\r\n")
    record("headers never finished", status, f"closed after {seconds:.1f} s")
    status, seconds = _raw(url, _request_head("PUT", "/operands/slow", 1000, "application/octet-stream",
                                              TOKENS["attacker"]), [b"\x93NUMPY"])
    record("body stalled after 6 of 1000 bytes", status, f"closed after {seconds:.1f} s")
    response = http.delete("/jobs")
    record("DELETE /jobs (no such method)", response.status_code, f"Allow: {response.headers.get('allow')}")


_RESPAWN = """
import contextlib, os, sys, time
from concurrent.futures.process import BrokenProcessPool
import numpy as np
from server.executor import LocalProcessExecutor
executor = LocalProcessExecutor(1, start=sys.argv[1])
executor.submit_call(os.getpid).result()
seconds = []
for _ in range(int(sys.argv[2])):
    with contextlib.suppress(BrokenProcessPool):
        executor.submit_call(os._exit, 134).result()
    started = time.monotonic()
    executor.submit_call(os.getpid).result()
    seconds.append(time.monotonic() - started)
executor.shutdown()
print(float(np.median(seconds)))
"""


def respawn_seconds(start: str, times: int = 5) -> float:
    """Median seconds from a worker's crash to the answer of the next call, on a fresh worker started by `start`
    (EINFHE_WORKER_START), in an executor of one worker in a child process (whose main module, like the server's,
    costs a worker nothing to import)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.run([sys.executable, "-c", _RESPAWN, start, str(times)], capture_output=True, text=True,
                           env=env, timeout=300, check=True)
    return float(child.stdout.split()[-1])


def main() -> None:
    """Run the flood on each server of --servers in turn (the first, by default workers spawned and jobs in arrival
    order as before issue 18, is the baseline), every other attack on the last, and print what each got and the
    targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victim-requests", type=int, default=20, help="victim einsums quiet, and again in the flood")
    parser.add_argument("--flood", type=int, default=12, help="crashing jobs the attacker submits")
    parser.add_argument("--search-budget", type=int, default=600, help="mutations tried to find crashing ones")
    parser.add_argument("--seeds", type=int, nargs="+", help="`forge` seeds to flood with (default: search)")
    parser.add_argument("--servers", nargs="+", default=["spawn:fifo", "forkserver:fair"],
                        help="EINFHE_WORKER_START:EINFHE_SCHEDULING of each server the flood runs on, in turn (the "
                             "first is the baseline); the other attacks run on the last")
    args = parser.parse_args()
    statuses: list[int] = []

    def record(attack: str, status: int, note: str = "") -> None:
        statuses.append(status)
        print(f"{attack:58s} {status!s:>5} {note}", flush=True)

    for start in dict.fromkeys(label.split(":")[0] for label in args.servers):
        print(f"a worker replaced after a crash (EINFHE_WORKER_START={start}): the next call answered after "
              f"{respawn_seconds(start) * 1e3:.0f} ms (median of 5)", flush=True)
    floods: dict[str, dict] = {}
    for number, label in enumerate(args.servers, 1):
        start, scheduling = label.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "tokens.txt").write_text("".join(f"{t}:{k}\n" for t, k in TOKENS.items()))
            env = {"EINFHE_HEADER_TIMEOUT_SECONDS": "2", "EINFHE_BODY_TIMEOUT_SECONDS": "2",
                   "EINFHE_WORKER_START": start, "EINFHE_SCHEDULING": scheduling}
            with einfhe_serve(tmp / "data", tmp / "tokens.txt", 2, env=env) as (server, url), \
                    MemorySampler(server.pid) as peak:
                flood = _Flood(url, np.random.default_rng(18))
                if number == len(args.servers):
                    _attacks(url, tmp / "data", flood, record)
                if number == 1:  # the same mutations on every server (which ones crash varies a little by key)
                    crashers = args.seeds or find_crashers(flood.ctx, flood.good, flood.plan.plan.to_json(), flood.W,
                                             args.search_budget, 3)
                    print(f"crashing mutations: seeds {crashers} ({'given' if args.seeds else 'found'}, of at most "
                          f"{args.search_budget} tried); every server's flood uses them", flush=True)
                floods[label] = flood.run(args.victim_requests, args.flood, crashers) if crashers else {}
                floods[label].update(lost=flood.lost, api_peak=peak_rss(server.pid), worker_peak=peak.peak_descendant())
                statuses.extend(flood.statuses)
                flood.close()

    p = lambda xs, q: float(np.quantile(xs, q)) * 1e3 if xs else float("nan")  # noqa: E731
    for label, result in floods.items():
        quiet, flooding = result.get("quiet", []), result.get("flood", [])
        print(f"{label}: flood: attacker's job submissions {result.get('answers')}; accepted jobs ended "
              f"{result.get('endings')}")
        print(f"  victim quiet: p50 {p(quiet, 0.5):.0f} ms, p95 {p(quiet, 0.95):.0f} ms; during the flood: "
              f"p50 {p(flooding, 0.5):.0f} ms, p95 {p(flooding, 0.95):.0f} ms "
              f"({p(flooding, 0.95) / p(quiet, 0.95):.2f}x quiet p95; target <= 2x); slowest during the flood "
              f"{p(flooding, 1.0):.0f} ms; victim requests lost {result['lost']} (target 0)")
        print(f"  API process peak RSS {result['api_peak'] / _MIB:.0f} MiB (target < 1024); largest process under "
              f"it (a worker or the fork server) {result['worker_peak'] / _MIB:.0f} MiB")
    print(f"5xx answers, every server: {sum(s >= 500 for s in statuses)} (target 0)")


if __name__ == "__main__":
    main()
