"""Load: concurrent tenants' clients against `einfhe serve` for a bounded time, every answer decrypted and checked.

    PYTHONPATH=. .venv/bin/python bench/load_bench.py [--clients 16] [--seconds 30] [--workers 2] [--in-flight 4]
        [--scheduling fifo fair]

Each client is its own tenant with its own keys at ring 2^14 (128-bit parameters the server derives) and its own
registered 64x128 W; it sends ij,j->i with a fresh x, `--in-flight` requests outstanding at a time (so that a tenant
has jobs queued, as one sending a batch or serving several users does; with one, a worker that has just served a
tenant never finds another job of it queued, and no placement can save a key load), bench/load_client.py's
run_load: the timed window opens
once every client has uploaded its keys. Printed: requests sent, answered correctly, wrong, lost (sent but not
answered correctly or not among the server's succeeded jobs), throughput, latency p50/p95/max per request
(encrypt, upload, run in a worker, inline answer, decrypt), the median time a job spent in a worker, and memory:
the peak resident set (the kernel's VmHWM) of the API process and of each worker process, and the peak of their
sum sampled every 50 ms, over the whole run (key uploads included) and in the timed window. The server runs as a
subprocess (what `einfhe serve` runs: uvicorn with the same app), so its memory is its own.

The load runs once per `--scheduling` order (EINFHE_SCHEDULING: `fifo`, jobs in arrival order, the scheduling before
issue 18; `fair`, per-tenant fair queueing with key-set-sticky placement), each on a fresh server, in the same run;
the last lines compare throughput and latency with the first order's.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before openfhe loads: the clients' keygen and encryption too

import einfhe  # noqa: E402,F401  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from bench.serving import MemorySampler, einfhe_serve, peak_rss  # noqa: E402
from bench.load_client import run_load  # noqa: E402

_MIB = 1 << 20


def main() -> None:
    """Run the load and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="the server's worker processes")
    parser.add_argument("--in-flight", type=int, default=4, help="requests each client keeps outstanding")
    parser.add_argument("--scheduling", nargs="+", default=["fifo", "fair"], choices=("fifo", "fair"),
                        help="the server's job orders to measure, one run each (the first is the baseline)")
    args = parser.parse_args()
    results = {order: _run(args, order) for order in args.scheduling}
    base = results[args.scheduling[0]]
    for order, (throughput, p50, p95) in results.items():
        print(f"{order}: throughput {throughput:.1f} requests/s ({throughput / base[0]:.2f}x {args.scheduling[0]}), "
              f"p50 {p50 * 1e3:.0f} ms ({p50 / base[1]:.2f}x), p95 {p95 * 1e3:.0f} ms ({p95 / base[2]:.2f}x)")


def _run(args, order: str) -> tuple[float, float, float]:
    """One load on a fresh server with job order `order`; print its figures and return (throughput, p50, p95)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokens = [f"load-token-{i:02d}-0123456789" for i in range(args.clients)]
        (tmp / "tokens.txt").write_text("".join(f"tenant{i:02d}:{t}\n" for i, t in enumerate(tokens)))
        with einfhe_serve(tmp / "data", tmp / "tokens.txt", args.workers,
                          env={"EINFHE_SCHEDULING": order}) as (server, url):
            with MemorySampler(server.pid) as sampler:
                report = run_load(url, tokens, seconds=args.seconds, in_flight=args.in_flight)
                window_start = time.monotonic() - report.seconds
            peaks = {"API process": peak_rss(server.pid)}
            workers = [p for p in psutil.Process(server.pid).children(recursive=True)  # not multiprocessing's helpers
                       if "resource_tracker" not in " ".join(p.cmdline())  # (the fork server's children are workers)
                       and not (p.ppid() == server.pid and "multiprocessing.forkserver" in " ".join(p.cmdline()))]
            for i, worker in enumerate(workers):
                peaks[f"worker {i + 1}"] = peak_rss(worker.pid)

    first = sorted(c.first_call for c in report.clients)
    print(f"== scheduling {order}: {args.clients} clients (one tenant and key set each, {args.in_flight} requests "
          f"in flight each), ij,j->i W 64x128 at ring 2^14, 128-bit; server: {args.workers} worker processes; "
          f"window {report.seconds:.1f} s")
    print(f"first call per client (plan, keygen, key upload, einsum): median {first[len(first) // 2]:.1f} s, "
          f"max {first[-1]:.1f} s")
    print(f"requests sent {report.sent}, answered correctly {report.correct}, wrong {report.wrong}, "
          f"lost {report.lost}, errors {sum(len(c.errors) for c in report.clients)}")
    throughput = sum(len(c.latencies) for c in report.clients) / report.seconds
    print(f"throughput {throughput:.1f} requests/s")
    in_worker = np.concatenate([c.server_seconds for c in report.clients])
    print(f"time in a worker per job (reading keys when the worker held another tenant's, the ciphertext, "
          f"computing): median {np.median(in_worker) * 1e3:.0f} ms")
    print(f"latency per request: p50 {report.latency(0.5) * 1e3:.0f} ms, p95 {report.latency(0.95) * 1e3:.0f} ms, "
          f"max {report.latency(1.0) * 1e3:.0f} ms")
    rates = sorted(len(c.latencies) / report.seconds for c in report.clients)
    p95s = sorted(float(np.quantile(c.latencies, 0.95)) * 1e3 for c in report.clients if c.latencies)
    print(f"per tenant: throughput min / median / max {rates[0]:.2f} / {rates[len(rates) // 2]:.2f} / "
          f"{rates[-1]:.2f} requests/s; p95 min / median / max {p95s[0]:.0f} / {p95s[len(p95s) // 2]:.0f} / "
          f"{p95s[-1]:.0f} ms")
    print("peak memory (VmHWM): " + ", ".join(f"{name} {rss / _MIB:.0f} MiB" for name, rss in peaks.items())
          + f"; their sum sampled every 50 ms: peak {sampler.peak() / _MIB:.0f} MiB, in the timed window "
            f"{sampler.peak(window_start) / _MIB:.0f} MiB")
    for load in report.clients:
        for error in load.errors[:3]:
            print(f"  error: {error}")
    return throughput, report.latency(0.5), report.latency(0.95)


if __name__ == "__main__":
    main()
