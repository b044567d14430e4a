"""Address space a worker takes for one job, against the job's key set (issue 18): the service caps each worker's
address space (RLIMIT_AS, EINFHE_WORKER_MEMORY_BYTES), and its default must leave room for the largest key set the
server admits. For each size, a cipher vector times a plain n x n matrix at 128-bit, ring 2^16, whose key set is made
and serialized here, then run by server.worker.run_job in a fresh process (as a worker runs it); its VmPeak (the
peak address space, what RLIMIT_AS caps) beside the key set's bytes, and the default cap for the default settings.

    OMP_NUM_THREADS=1 PYTHONPATH=. flock /tmp/einfhe-bigmem.lock python bench/worker_memory_bench.py [--n 2048 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import einfhe

_MIB = 1 << 20

_RUN = """
import json, sys
from pathlib import Path
from server.job_messages import JobTask
from server.worker import run_job
folder = Path(sys.argv[1])
task = JobTask("job", "keys", str(folder / "keys"), json.loads((folder / "params.json").read_text()),
               (folder / "plan.json").read_text(), ((folder / "ct").read_bytes(),), ((0, str(folder / "W.npy")),), 1024)
outcome = run_job(task)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kib = {name: int(status[name].split()[0]) for name in ("VmPeak", "VmHWM")}
print(json.dumps({"ok": outcome.ok, "code": outcome.code, "seconds": outcome.seconds,
                  "vm_peak": kib["VmPeak"] << 10, "rss_peak": kib["VmHWM"] << 10}))
"""


def measure(n: int, slots: int, folder: Path) -> dict:
    """Make the n x n job's keys and inputs under `folder`, run it in a fresh process; its key bytes and peaks."""
    rng = np.random.default_rng(0)
    W, x = rng.uniform(-1, 1, (n, n)) / np.sqrt(n), rng.uniform(-1, 1, n)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((n,)), slots=slots)
    ctx = einfhe.Context.for_plan(plan)
    keys = einfhe.evaluation_keys_to_bytes(ctx)
    (folder / "keys").write_bytes(keys)
    (folder / "ct").write_bytes(einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, x, plan.input_layout(1))))
    (folder / "plan.json").write_text(plan.to_json())
    (folder / "params.json").write_text(json.dumps(ctx.params.to_json()))
    np.save(folder / "W.npy", W)
    rotations, ring = len(plan.rotations), ctx.params.ring_dim
    del ctx, keys
    child = subprocess.run([sys.executable, "-c", _RUN, str(folder)], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return {**json.loads(child.stdout.splitlines()[-1]), "keys": (folder / "keys").stat().st_size,
            "rotations": rotations, "ring": ring}


def main() -> None:
    """Measure each --n and print the peaks against the key bytes, and the default cap."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--slots", type=int, default=32768)
    args = parser.parse_args()
    from server import Settings
    from server.service import worker_memory_bytes

    for n in args.n:
        with tempfile.TemporaryDirectory() as tmp:
            got = measure(n, args.slots, Path(tmp))
        print(f"n={n}: ring {got['ring']}, {got['rotations']} rotation keys, key set {got['keys'] / _MIB:.0f} MiB; "
              f"job ok={got['ok']} in {got['seconds']:.1f} s; worker peak address space "
              f"{got['vm_peak'] / _MIB:.0f} MiB ({got['vm_peak'] / got['keys']:.2f}x the key set), peak RSS "
              f"{got['rss_peak'] / _MIB:.0f} MiB", flush=True)
    settings = Settings(workers=2)
    print(f"default cap with the default settings on this machine (2 workers): "
          f"{worker_memory_bytes(settings) / _MIB:.0f} MiB; largest key set admitted "
          f"{settings.max_keyset_bytes / _MIB:.0f} MiB, largest upload {settings.max_ciphertext_bytes / _MIB:.0f} MiB")


if __name__ == "__main__":
    main()
