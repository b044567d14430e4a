"""REST round trip vs in-process for the same encrypted einsum at ring 2^14 (128-bit), and 16 concurrent clients.

    PYTHONPATH=. .venv/bin/python bench/service_bench.py [--rows 64 --cols 128 --repeats 10 --clients 16]

In-process: encrypt, einfhe.run, decrypt with one Context. REST: Client.einsum against a local uvicorn server
(2 worker processes): encrypt, upload, run in a worker, download, decrypt. Keys are generated and uploaded
once before timing; both sides are timed per call (median). The overhead ratio is REST / in-process.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from client import Client
from server import LocalServer, Settings

TOKEN = "bench-token-0123456789"


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    W = rng.standard_normal((args.rows, args.cols))
    x = rng.standard_normal(args.cols)
    spec = "ij,j->i"

    plan = einfhe.compile(spec, W, einfhe.cipher(x.shape))
    ctx = einfhe.Context.for_plan(plan)
    print(f"plan: {spec} W{W.shape}  {ctx.params}  rotations={len(plan.rotations)} depth={plan.depth}")

    def in_process():
        y = einfhe.decrypt(ctx, einfhe.run(ctx, plan, W, einfhe.encrypt(ctx, x, plan.input_layout(1))))
        np.testing.assert_allclose(y, W @ x, atol=1e-4)

    local = _median_seconds(in_process, args.repeats)

    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.txt"
        tokens.write_text(f"bench:{TOKEN}\n")
        with LocalServer(Settings(data_dir=Path(tmp) / "data", token_file=tokens, workers=2)) as url:
            with Client(url, TOKEN, progress=False) as client:
                client.register_operand("W", W)
                start = time.perf_counter()
                client.einsum(spec, "W", x)  # plans, generates keys, uploads them once
                first = time.perf_counter() - start
                keyset = client.http.request("GET", "/keysets").json()[0]

                def rest():
                    np.testing.assert_allclose(client.einsum(spec, "W", x), W @ x, atol=1e-4)

                remote = _median_seconds(rest, args.repeats)

            def one_client(seed: int) -> bool:
                v = np.random.default_rng(seed).standard_normal(args.cols)
                with Client(url, TOKEN, progress=False) as c:
                    return bool(np.allclose(c.einsum(spec, "W", v), W @ v, atol=1e-4))

            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(one_client, range(args.clients)))
            concurrent = time.perf_counter() - start

    print(f"in-process encrypt+run+decrypt   median {local * 1e3:8.1f} ms  ({args.repeats} runs)")
    print(f"REST round trip (keys cached)    median {remote * 1e3:8.1f} ms  ({args.repeats} runs)")
    print(f"REST overhead ratio              {remote / local:8.2f}x  ({(remote / local - 1) * 100:+.0f}%)")
    print(f"first REST call (plan + keygen + key upload {keyset['size'] / 2**20:.1f} MiB): {first:.2f} s")
    print(f"{args.clients} concurrent clients (own keys each): {sum(results)}/{len(results)} correct "
          f"in {concurrent:.1f} s")


if __name__ == "__main__":
    main()
