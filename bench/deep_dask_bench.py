"""The deep digits CNN's bootstrapped plan on threads and on Dask workers: its independent ciphertexts (the
channels of a layer, the 16 ciphertexts of each bootstrap point) spread over 1, 2 and 4 workers.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/deep_dask_bench.py [--ring 4096] [--dask 1,2,4]

The model and plan are bench/digits_deep.py's (two bootstraps of 16 ciphertexts, 6 levels between them, 128
test images in the slots). At 128-bit (ring 2^16) one bootstrapping key set is 8 GiB and every Dask worker holds
its own copy, which this 24 GiB machine cannot give four workers; so the run uses the same plan on a smaller ring
with the same chain (depth 6 + bootstrapping, 2^55 scale over a 60-bit first modulus) and NO security: it
measures how the work spreads, not a 128-bit latency. Printed: one process on 1 and 2 threads (`einfhe.run`'s
`workers`), then a LocalCluster of 1, 2, 4 single-threaded processes through `einfhe.runtime.dask_runner`, first
with the whole plan (its outputs share work, so it is one part and one worker runs it), then `staged=True` (cut
at every level change, `einfhe.plan.stages`, each stage's ciphertexts in parts); each run includes every worker
loading the key set, each with its ratio to the one-thread run measured in the same run, and the agreement of
the decrypted predictions with the plaintext model.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402  -- loads openfhe before torch

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_deep import DeepDigitsNet, einfhe_layers, layer_inputs, upsample  # noqa: E402
from digits_resnet import digits_split, train  # noqa: E402

from einfhe.compiler import compile_model  # noqa: E402
from einfhe.params import INSECURE, Parameters  # noqa: E402
from einfhe.plan.partition import partition  # noqa: E402
from einfhe.plan.stages import stages  # noqa: E402


def dask_seconds(workers: int, plan, plains: dict, keys: bytes, blob: bytes, params: dict,
                 staged: bool) -> tuple[float, bytes]:
    """(wall seconds of one run of `plan` on a LocalCluster of `workers` single-threaded processes, the result
    blob); `blob` is operand 0's tensor blob, `plains` the plain operands by number."""
    import distributed

    from einfhe.runtime.dask_runner import DaskRunner

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, memory_limit=0) as cluster, \
            distributed.Client(cluster) as client:
        runner = DaskRunner(client, timeout=3600.0)
        start = time.perf_counter()
        result = runner.run(plan, "deep", keys, {0: blob}, plains, params=params, staged=staged)
    return time.perf_counter() - start, result


def main() -> None:
    """Compile the deep CNN, run it on threads and on Dask workers, print the times and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ring", type=int, default=4096, help="ring dimension (insecure below 2^16)")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--dask", default="1,2,4", help="comma-separated Dask worker counts")
    args = parser.parse_args()
    torch.manual_seed(0)
    Xtr, Xte, ytr, _ = digits_split()
    net = train(DeepDigitsNet(), upsample(Xtr), ytr, epochs=300)
    X = upsample(Xte)[:args.samples].reshape(args.samples, -1).astype(np.float64)
    layers = einfhe_layers(net)
    plain_pred = layer_inputs(layers, X)[-1].argmax(1)
    model = compile_model(layers, X.shape[1], batch=len(X), slots=128, max_depth=6)
    secure = Parameters.derive(6, 128, bootstrap=True)
    params = Parameters(args.ring, 128, 6, secure.scale_bits, secure.first_mod_bits, INSECURE, True).validate()
    start = time.perf_counter()
    ctx = einfhe.Context.for_plan(model.plan, params=params)
    keys = einfhe.evaluation_keys_to_bytes(ctx)
    keygen = time.perf_counter() - start
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout, level=model.input_level(params))
    blob = einfhe.tensor_to_bytes(ctx, xe)
    cut = stages(model.plan)
    parts = [len(partition(stage.plan)) for stage in cut]
    print(f"{params}; {len(model.levels.bootstrap_before)} bootstrap points, {model.plan.bootstraps} bootstrapped "
          f"ciphertexts; {len(partition(model.plan))} independent part(s) for Dask, staged: {len(cut)} stages of "
          f"{min(parts)}-{max(parts)} parts; keys {len(keys) / 2**20:.0f} MiB in {keygen:.1f} s; "
          f"{os.cpu_count()} cores", flush=True)

    def agreement(out) -> float:
        return float(np.mean(model.unpack_output(out).argmax(1) == plain_pred))

    base = None
    for threads in (1, 2):
        start = time.perf_counter()
        out = einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe), workers=threads))
        seconds = time.perf_counter() - start
        base = base or seconds
        print(f"one process, {threads} thread(s): {seconds:.1f} s ({base / seconds:.2f}x one thread), agreement with "
              f"plaintext {agreement(out):.4f}", flush=True)
    for staged in (False, True):
        for workers in [int(w) for w in args.dask.split(",") if w]:
            plains = {i + 1: p for i, p in enumerate(model.plains)}
            seconds, result = dask_seconds(workers, model.plan, plains, keys, blob, params.to_json(), staged)
            out = einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, result))
            print(f"dask {workers} worker(s){', staged' if staged else ', whole plan'}: {seconds:.1f} s "
                  f"({base / seconds:.2f}x one thread), agreement with plaintext {agreement(out):.4f}", flush=True)


if __name__ == "__main__":
    main()
