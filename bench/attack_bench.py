"""Attacks on `einfhe serve` over loopback (issue 18), bounded: what each got back, the API and worker processes'
peak memory, and a victim tenant's latency during a flood of worker-crashing jobs beside its latency on the quiet
server, in the same run.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/attack_bench.py [--victim-requests 20] [--flood 12] [--rounds 3]
        [--servers spawn:fifo forkserver:fair] [--seeds 25 98 203]

Attacks, each on the same server (2 workers, header and body timeouts of 2 s): a msgpack job body of 255 MiB of
2-byte parts; a msgpack model upload of 16 M tiny entries; 256 MiB of text/plain to /plans without a token; a
64 MiB Authorization header; a bz2 tar whose GNU long-name header declares 1 GiB; a gzip tar whose pax header
declares 1 GiB; a .npy header declaring 10^6 x 10^6 float64; a 64 MB int8 operand (stored size, blob gone after DELETE);
headers and a body sent too slowly; a 405 (Allow); a tenant's keys uploaded again and again (the per-tenant key-set
quota); a model name registered twice; then the flood: the attacker queues forged ciphertexts (checksum
recomputed) that crash OpenFHE, found by mutating a valid one in a local child process until one kills it (about
1 in 100 of `forge`'s mutations), from a client process of its own, while the victim sends einsums
(bench/crash_flood.py), in --rounds rounds of quiet requests then a flood by a fresh attacker (the quiet and
flood samples interleaved, so that the load of other processes on the machine falls on both alike). The flood runs
first on a server as it was
before issue 18 (workers spawned as fresh interpreters, jobs in arrival order: EINFHE_WORKER_START=spawn,
EINFHE_SCHEDULING=fifo; quarantine on), the baseline, then on a server with the defaults, in the same run.
Targets (the issue's): API process peak RSS under 1 GiB, victim p95 during the flood at most 2x quiet, no 5xx,
nothing acknowledged lost.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import bz2  # noqa: E402
import io  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import msgpack  # noqa: E402
import numpy as np  # noqa: E402

from bench.crash_flood import Flood, find_crashers  # noqa: E402
from bench.serving import MemorySampler, einfhe_serve, peak_rss  # noqa: E402

_MIB = 1 << 20
TOKENS = {"victim": "victim-token-0123456789", "attacker": "attacker-token-0123456789",
          "operator": "operator-token-0123456789",
          **{f"attacker-{n}": f"attacker-{n}-token-0123456789" for n in range(1, 10)}}  # later rounds' attackers


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


def _attacks(url: str, data_dir: Path, flood: Flood, record) -> None:
    """Every attack but the flood, each answer passed to `record(attack, status, note)`."""
    http = flood.attacker.http
    operator = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKENS['operator']}"})
    n = 255 * _MIB // 4
    body = b"\xdd" + struct.pack(">I", n) + b"\xc4\x02ab" * n
    record("POST /jobs msgpack, 255 MiB of 2-byte parts",
           http.post(flood.attacker.job_query, content=body,
                     headers={"Content-Type": "application/msgpack"}).status_code)
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
    keys = einfhe.evaluation_keys_to_bytes(flood.attacker.ctx)
    answers = [http.post("/keysets", content=keys, headers={"Content-Type": "application/octet-stream"})
               for _ in range(8)]
    codes = Counter(r.status_code if r.status_code < 400 else f"{r.status_code} {r.json()['error']['code']}"
                    for r in answers)
    record("POST /keysets: the tenant's keys uploaded 8 times more", answers[-1].status_code,
           f"answers {dict(codes)}; {len(keys) / _MIB:.1f} MiB each")
    operator = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKENS['operator']}"})
    model = {"content": _model_upload(), "headers": {"Content-Type": "application/msgpack"},
             "params": {"name": "twice"}}
    first, again = operator.post("/models", **model), operator.post("/models", **model)
    record("POST /models: one name registered twice", again.status_code,
           f"first {first.status_code}, then {again.json().get('error', {}).get('code')}")
    operator.close()


def _model_upload() -> bytes:
    """A 6-4-2 square-activation MLP quantized to W4A16 by quant and exported as integers, as a msgpack upload."""
    import torch

    import quant

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 4), quant.Square(), torch.nn.Linear(4, 2))
    quant.quantize_(net, quant.W4A16(group_size=32))
    with tempfile.TemporaryDirectory() as tmp:
        quant.export_integer_model(net, tmp, example_input=torch.rand(9, 6))
        files = {name: Path(tmp, name).read_bytes() for name in ("manifest.json", "model.npz")}
    return msgpack.packb(files, use_bin_type=True)


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
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 11),
                        help="rounds of quiet requests then a flood (a fresh attacker each)")
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
                flood = Flood(url, TOKENS, np.random.default_rng(18))
                if number == len(args.servers):
                    _attacks(url, tmp / "data", flood, record)
                if number == 1:  # the same mutations on every server (which ones crash varies a little by key)
                    attacker = flood.attacker
                    crashers = args.seeds or find_crashers(attacker.ctx, attacker.good, attacker.plan.plan.to_json(),
                                                           flood.W, args.search_budget, 3)
                    print(f"crashing mutations: seeds {crashers} ({'given' if args.seeds else 'found'}, of at most "
                          f"{args.search_budget} tried); every server's flood uses them", flush=True)
                floods[label] = flood.run(args.victim_requests, args.flood, crashers, args.rounds) if crashers else {}
                floods[label].update(lost=flood.lost, api_peak=peak_rss(server.pid), worker_peak=peak.peak_descendant())
                statuses.extend(flood.statuses)
                flood.close()

    p = lambda xs, q: float(np.quantile(xs, q)) * 1e3 if xs else float("nan")  # noqa: E731
    for label, result in floods.items():
        quiet, flooding = result.get("quiet", []), result.get("flood", [])
        print(f"{label}: flood: attacker's job submissions {result.get('answers')}; accepted jobs ended "
              f"{result.get('endings')}, {result.get('ended_during')} of them while the victim's requests ran")
        print(f"  victim quiet: p50 {p(quiet, 0.5):.0f} ms, p95 {p(quiet, 0.95):.0f} ms; during the flood: "
              f"p50 {p(flooding, 0.5):.0f} ms, p95 {p(flooding, 0.95):.0f} ms "
              f"({p(flooding, 0.95) / p(quiet, 0.95):.2f}x quiet p95; target <= 2x; each round's "
              f"{', '.join(f'{r:.2f}x' for r in result.get('ratios', []))}); slowest during the flood "
              f"{p(flooding, 1.0):.0f} ms; victim requests lost {result['lost']} (target 0)")
        if flooding:
            slowest = int(np.argmax(flooding))
            print(f"  victim's jobs in a worker: median {p(result['worker_quiet'], 0.5):.0f} ms quiet, "
                  f"{p(result['worker_flood'], 0.5):.0f} ms during the flood; the slowest request in the flood "
                  f"{flooding[slowest] * 1e3:.0f} ms, of it {result['worker_flood'][slowest] * 1e3:.0f} ms in a worker "
                  f"(round {slowest // args.victim_requests + 1}, request {slowest % args.victim_requests + 1})")
        print(f"  API process peak RSS {result['api_peak'] / _MIB:.0f} MiB (target < 1024); largest process under "
              f"it (a worker or the fork server) {result['worker_peak'] / _MIB:.0f} MiB")
    print(f"5xx answers, every server: {sum(s >= 500 for s in statuses)} (target 0)")


if __name__ == "__main__":
    main()
