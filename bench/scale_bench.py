"""Scale-out: one multi-ciphertext job on the local executor (1 worker) and on Dask (1 and 2 workers), 128-bit.

    PYTHONPATH=. .venv/bin/python bench/scale_bench.py [--workload model|einsum] [--repeats 3] [--dask-workers 1,2]

Workloads, at parameters derived for 128-bit security: `model` is a batch of 4096 inferences of a 32-32
square-activation layer (32 input and 32 output ciphertexts, one part per output); `einsum` is A @ B with A
(64, 64) encrypted across 128 ciphertexts and B plain (2 output tiles, so 2 parts). Every executor gets the
same `JobTask` (key set, tensor and plain operands on disk, as the service stores them). The first run of each
executor loads the key set into its workers (cold); the others find it cached (warm, median). Workers run
OpenMP with one thread. The ratio is local / Dask: above 1, Dask is faster. Bytes are measured on the blobs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before openfhe loads: one thread per worker process

import einfhe  # noqa: E402  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import contextlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import distributed  # noqa: E402
import numpy as np  # noqa: E402

from einfhe.compiler.model import Linear, Square, compile_model  # noqa: E402
from einfhe.plan.partition import partition  # noqa: E402
from server.dask_executor import DaskExecutor  # noqa: E402
from server.executor import LocalProcessExecutor  # noqa: E402
from server.job_messages import JobTask  # noqa: E402


def _workload(name: str, rng):
    """(plan, context, cipher input, plain operands by position, reference output) for a workload name."""
    if name == "model":
        W = rng.standard_normal((32, 32)) / 8
        model = compile_model([Linear(W), Square()], 32, batch=4096, slots=4096)
        X = rng.uniform(-1, 1, (4096, 32))
        ctx = einfhe.Context.for_plan(model.plan)
        x = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
        return model.plan, ctx, x, dict(enumerate(model.plains, start=1)), model.pack_input((X @ W.T) ** 2)
    A, B = rng.standard_normal((64, 64)), rng.standard_normal((64, 64))
    plan = einfhe.compile("ij,jk->ik", einfhe.cipher(A.shape), B, slots=2048)
    ctx = einfhe.Context.for_plan(plan)
    return plan, ctx, einfhe.encrypt(ctx, A, plan.input_layout(0)), {1: B}, A @ B


def _task(root: Path, plan, ctx, x, plains) -> tuple[JobTask, dict]:
    """The job as the service stores it, and the measured bytes of its blobs."""
    keys, tensor = einfhe.evaluation_keys_to_bytes(ctx), einfhe.tensor_to_bytes(ctx, x)
    (root / "keys.bin").write_bytes(keys)
    (root / "x.bin").write_bytes(tensor)
    paths = []
    for position, array in plains.items():
        np.save(root / f"p{position}.npy", array, allow_pickle=False)
        paths.append((position, str(root / f"p{position}.npy")))
    task = JobTask("bench", "bench-keys", str(root / "keys.bin"), ctx.params.to_json(), plan.to_json(),
                   (str(root / "x.bin"),), tuple(paths), 1 << 16)
    return task, {"keys": len(keys), "input": len(tensor), "ct": len(tensor) // plan.cts_in}


def _time(executor, task, ctx, reference, repeats: int) -> tuple[float, float, int, list[float]]:
    """Cold seconds, warm median seconds, the result's bytes and (on Dask) the last run's compute seconds
    per part, checking every result against numpy."""
    times, size, computes = [], 0, []
    for _ in range(repeats + 1):
        stream = (distributed.get_task_stream(client=executor.client) if isinstance(executor, DaskExecutor)
                  else contextlib.nullcontext())
        with stream as record:
            start = time.perf_counter()
            outcome = executor.submit(task).result(timeout=1800)
            times.append(time.perf_counter() - start)
        if record is not None:
            computes = [s["stop"] - s["start"] for t in record.data if t["key"].startswith("einfhe-part")
                        for s in t["startstops"] if s["action"] == "compute"]
        if not outcome.ok:
            raise RuntimeError(f"{type(executor).__name__}: {outcome.code}: {outcome.message}")
        y = einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, outcome.result))
        np.testing.assert_allclose(y, reference, atol=1e-3 * max(1.0, np.abs(reference).max()))
        size = len(outcome.result)
    return times[0], statistics.median(times[1:]), size, computes


def _paper_cluster(nodes: int, groups: int, dask1: float, computes: list[float], sizes: dict, out_bytes: int,
                   link: float) -> dict:
    """On-paper seconds of one job on `nodes` single-core workers, from what the 1-worker Dask run measured:
    its parts' compute seconds (spread over min(nodes, groups) workers), its remaining fixed overhead (driver,
    scheduler, serialization and loopback transfer: kept whole, an upper bound), and the bytes over a `link`
    bytes/s network from the driver: the key set once per node (cold), the input and output once per job."""
    key_upload = nodes * sizes["keys"] / link
    transfer = (sizes["input"] + out_bytes) / link
    work = sum(computes)
    overhead = max(0.0, dask1 - work)
    return {"key_upload_s": key_upload, "job_s": overhead + transfer + work / min(nodes, groups)}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a Markdown table with ratios and the 16-node estimate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("model", "einsum"), default="model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--link-gbit", type=float, default=10.0, help="network for the on-paper cluster")
    parser.add_argument("--dask-workers", default="1,2",
                        help="comma-separated Dask worker counts to run (the first must be 1: it is the base "
                             "of the on-paper cluster)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.dask_workers.split(",")]
    if counts[0] != 1 or any(n < 1 for n in counts):
        parser.error("--dask-workers must start with 1 and hold positive counts, e.g. 1,2,4")
    rng = np.random.default_rng(0)
    plan, ctx, x, plains, reference = _workload(args.workload, rng)
    parts = len(partition(plan))  # independent output groups: the most parts the runner can make
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        task, sizes = _task(Path(tmp), plan, ctx, x, plains)
        executors = [("local, 1 worker", lambda: LocalProcessExecutor(1))]
        executors += [(f"dask, {n} worker{'s' if n > 1 else ''}", lambda n=n: DaskExecutor(workers=n))
                      for n in counts]
        for label, make in executors:
            executor = make()
            try:
                cold, warm, out_bytes, computes = _time(executor, task, ctx, reference, args.repeats)
            finally:
                executor.shutdown()
            rows.append((label, cold, warm, computes))
    base = rows[0][2]
    print(f"workload {args.workload}: {plan.spec}, ring {ctx.params.ring_dim}, depth {ctx.params.depth}, "
          f"{plan.cts_in} ciphertexts in, {plan.cts_out} out, {parts} parts; {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores")
    print(f"bytes: keys {sizes['keys']:,}, input {sizes['input']:,} ({sizes['ct']:,} per ciphertext), "
          f"output {out_bytes:,}")
    print("| executor | cold s (keys load) | warm s (median) | local / this (warm) | parts: tasks, compute s |")
    print("|---|---|---|---|---|")
    for label, cold, warm, computes in rows:
        parts_note = f"{len(computes)}, {sum(computes):.2f}" if computes else "-"
        print(f"| {label} | {cold:.2f} | {warm:.2f} | {base / warm:.2f}x | {parts_note} |")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    link = args.link_gbit * 1e9 / 8
    for nodes in (2, 16):
        paper = _paper_cluster(nodes, parts, rows[1][2], rows[1][3], sizes, out_bytes, link)
        print(f"on paper, {nodes} nodes at {args.link_gbit:g} Gbit/s: key upload {paper['key_upload_s']:.2f} s "
              f"once per key set, then {paper['job_s']:.2f} s per job ({rows[1][2] / paper['job_s']:.1f}x "
              f"the 1-worker Dask run)")


if __name__ == "__main__":
    main()
