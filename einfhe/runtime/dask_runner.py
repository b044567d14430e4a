"""Run a plan's parts (`einfhe.plan.partition`) as tasks on a Dask distributed cluster.

    runner = DaskRunner(distributed.Client("tcp://scheduler:8786"), retries=2)
    result = runner.run(plan, "keyset-1", key_blob, {1: tensor_blob}, {0: W})   # a tensor blob, as einfhe.run's

Everything crosses the wire as einfhe's bytes: the evaluation-key blob (`evaluation_keys_to_bytes`, never a
secret key) is sent to every worker once per key-set id, each input ciphertext once per run (to one worker;
peers fetch what their parts read), and each part returns its outputs as serialized ciphertexts; the caller's
process never loads keys or ciphertexts into OpenFHE. A worker loads a key set once per key-set id and keeps at
most `cache_size` of them (`einfhe.crypto.key_cache`, the service workers' cache too). Every ciphertext must carry
the key tag of its job's key set, so a job never evaluates under another tenant's keys.

Tasks are pure functions of their inputs, so re-running one is harmless: Dask re-runs a part when it raises
(`retries`) or its worker dies (`distributed.scheduler.allowed-failures`), and when a dead worker took the
only copy of a part's inputs with it, the runner sends them again and re-runs the lost parts, up to `retries`
more rounds. A run either returns every output or raises: an einfhe error as a task raised it, or
`DistributedError` when parts kept being lost or the run timed out.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np

from ..crypto import Context, EncryptedTensor, cached_backend, pack_blob, pack_parts, require_key_tag
from ..crypto.tensor import read_tensor_blob, tensor_from_bytes, tensor_to_bytes
from ..errors import DistributedError, EinfheError, EinsumError
from ..plan import Plan
from ..plan.partition import Part, assemble, partition, shares_plaintexts
from ..plan.stages import stages
from .interpreter import execute

__all__ = ["DaskRunner"]


def _run_part(keyset_id: str, keys: bytes, params: dict | None, cache_size: int, plan_json: str,
              cts: dict, plains: dict) -> list[bytes]:
    """Worker side of one part: load keys (cached), deserialize its input ciphertexts, execute, serialize."""
    backend = cached_backend(keyset_id, lambda: keys, params, cache_size)
    plan = Plan.from_json(plan_json)
    Context(backend, backend.params, (plan,)).check_plan(plan)
    ciphers = {op.operand: [None] * op.layout.num_cts for op in plan.cipher_inputs}
    for (operand, index), data in cts.items():
        ct = backend.deserialize_ciphertext(data)
        require_key_tag(backend, (ct,), f"operand {operand}")
        ciphers[operand][index] = ct
    # one thread: the parts already run side by side on the cluster's workers
    return [backend.serialize_ciphertext(ct) for ct in execute(plan, backend, ciphers, plains, workers=1)]


def _settle(futures: list, deadline: float) -> None:
    """Wait until no future is pending (finished, failed, cancelled or lost), or raise TimeoutError."""
    import distributed

    for future in futures:
        try:
            future.result(timeout=max(0.001, deadline - time.monotonic()))
        except (TimeoutError, distributed.TimeoutError):
            raise
        except Exception:  # noqa: BLE001 -- a failed or lost part is sorted out by `_collect`
            continue


def _collect(plan: Plan, n: int, future, results: list) -> bool:
    """Store part `n`'s result and return True; False when the part was lost with a worker; raise when it
    failed (an einfhe error as the task raised it, anything else as DistributedError)."""
    import distributed

    if future.status == "finished":
        results[n] = future.result()
        return True
    if future.status != "error":
        return False
    exc = future.exception()
    if isinstance(exc, EinfheError):
        raise exc
    if isinstance(exc, distributed.scheduler.KilledWorker):
        return False
    raise DistributedError(f"part {n} raised {type(exc).__name__}: {exc}", spec=plan.spec) from exc


def _split_tensor(plan: Plan, operand: int, blob: bytes, fingerprint: bytes, max_cts: int) -> tuple[bytes, ...]:
    """The serialized ciphertexts of a tensor blob for cipher operand `operand`, checked against its layout."""
    tensor = read_tensor_blob(blob, fingerprint, plan.slots, max_cts)
    if tensor.layout != plan.input_layout(operand):
        raise EinsumError(f"operand {operand} is not encrypted in the layout the plan needs: "
                          "encrypt it with plan.input_layout(...)", spec=plan.spec)
    return tensor.parts


class DaskRunner:
    """Runs plans on a `distributed.Client`, one task per part, with engine retries and a bounded wait."""

    def __init__(self, client, *, retries: int = 2, timeout: float = 600.0, cache_size: int = 1,
                 max_parts: int | None = None) -> None:
        if cache_size < 1 or retries < 0 or timeout <= 0:
            raise EinfheError("DaskRunner needs cache_size >= 1, retries >= 0 and timeout > 0")
        self.client = client
        self.retries, self.timeout, self.cache_size = retries, timeout, cache_size
        self.max_parts = max_parts
        self._keys: dict[str, object] = {}
        self._lock = threading.Lock()

    def parts(self, plan: Plan) -> tuple[Part, ...]:
        """The plan's parts, at most `max_parts` (default: the cluster's worker threads, times two to even out
        the load; once each where parts would share plaintexts, since each part encodes those it takes again:
        a worker's plaintext cache holds a few dozen, not a 4096x4096 matrix's diagonals)."""
        if self.max_parts is not None:
            return partition(plan, self.max_parts)
        threads = sum(self.client.nthreads().values()) or 1
        return partition(plan, threads if shares_plaintexts(plan) else 2 * threads)

    def _key_future(self, keyset_id: str, keys: bytes):
        """The cluster-side copy of a key blob, sent to every worker once per key-set id (again if lost)."""
        with self._lock:
            future = self._keys.get(keyset_id)
            if future is None or future.status != "finished":
                name = f"einfhe-keys-{keyset_id}-{uuid.uuid4().hex[:8]}"
                future = self._keys[keyset_id] = self.client.scatter({name: keys}, broadcast=True)[name]
            return future

    def forget(self, keyset_id: str) -> None:
        """Release the cluster's copy of a key set's blob (workers drop it from their caches on their own)."""
        with self._lock:
            future = self._keys.pop(keyset_id, None)
        if future is not None:
            future.release()

    def run(self, plan: Plan, keyset_id: str, keys: bytes, inputs: dict[int, bytes],
            plains: dict[int, np.ndarray], params: dict | None = None, max_cts: int = 4096,
            staged: bool = False) -> bytes:
        """Run `plan` on the cluster and return the result tensor blob (as `tensor_to_bytes` would).

        `inputs` maps each cipher operand to its tensor blob, `plains` each plain operand to its array;
        `params` (a `Parameters.to_json` dict) is required of the key set when given, and insecure
        parameters are refused without it; a tensor of more than `max_cts` ciphertexts is refused. `staged`
        runs the plan stage by stage (`einfhe.plan.stages`: cut at every level change, each stage split into
        parts), for deep models whose outputs share work and so make one part; the values between stages
        pass through the caller."""
        fingerprint, deadline = keys[8:24], time.monotonic() + self.timeout
        missing = [op.operand for op in plan.cipher_inputs if op.operand not in inputs]
        if missing:
            raise EinsumError(f"cipher operands {missing} have no tensor", spec=plan.spec)
        cts = {op.operand: _split_tensor(plan, op.operand, inputs[op.operand], fingerprint, max_cts)
               for op in plan.cipher_inputs}
        keyset = (keyset_id, keys, params)
        if not staged:
            outputs = self._run_parts(plan, cts, plains, keyset, deadline)
        else:
            values: dict[int, bytes] = {}
            for stage in stages(plan):
                values.update(zip(stage.plan.outputs, self._run_parts(
                    stage.plan, {**cts, **stage.carried_cts(values)}, plains, keyset, deadline)))
            outputs = [values[v] for v in plan.outputs]
        return pack_blob("tensor", fingerprint, pack_parts({"layout": plan.output_layout.to_json()}, outputs))

    def tensor_runner(self, ctx, keyset_id: str, keys: bytes, staged: bool = True):
        """A `run_plan(plan, *operands)` over EncryptedTensors and arrays (as `functools.partial(einfhe.run, ctx)`
        is) that runs each plan here through `run`, `ctx` (de)serializing the tensors between plans: for chains of
        plans (an encoder layer's `EncoderProgram.run`). Its `moved` counts the tensor bytes sent and received."""
        def run_plan(plan: Plan, *operands):
            inputs = {i: tensor_to_bytes(ctx, op) for i, op in enumerate(operands) if isinstance(op, EncryptedTensor)}
            plains = {i: op for i, op in enumerate(operands) if not isinstance(op, EncryptedTensor)}
            blob = self.run(plan, keyset_id, keys, inputs, plains, params=ctx.params.to_json(), staged=staged)
            run_plan.moved += sum(map(len, inputs.values())) + len(blob)
            return tensor_from_bytes(ctx, blob)

        run_plan.moved = 0
        return run_plan

    def _run_parts(self, plan: Plan, cts: dict, plains: dict, keyset: tuple, deadline: float) -> list[bytes]:
        """The plan's output ciphertexts (serialized), its parts run on the cluster, lost ones run again."""
        parts = self.parts(plan)
        results: list = [None] * len(parts)
        pending = list(range(len(parts)))
        for attempt in range(self.retries + 1):
            if attempt:  # let the scheduler notice the lost worker before scattering again
                time.sleep(min(0.5 * 2 ** attempt, max(0.0, deadline - time.monotonic())))
            pending = self._round(plan, parts, pending, results, cts, plains, keyset, deadline)
            if not pending:
                return assemble(plan, parts, results)
        raise DistributedError(f"plan {plan.spec!r}: parts {pending} were lost {self.retries + 1} times "
                               "(workers died or left the cluster)", spec=plan.spec)

    def _round(self, plan: Plan, parts, pending: list[int], results: list, cts: dict, plains: dict,
               keyset: tuple, deadline: float) -> list[int]:
        """Scatter the inputs of the pending parts, run them, store their results; return those lost.

        Scattered data held only by a worker that dies is gone, so each round scatters again from the
        caller's copy: a part is idempotent, and running it twice is harmless."""
        import distributed

        keyset_id, keys, params = keyset
        run_id = uuid.uuid4().hex[:12]
        futures: list = []
        scattered: list = []
        try:
            needed = sorted({read for n in pending for read in parts[n].reads})
            remaining = max(0.001, deadline - time.monotonic())
            ct_futures = dict(zip(needed, self.client.scatter([cts[o][i] for o, i in needed], hash=False,
                                                              timeout=remaining)))
            plain_name = f"einfhe-plains-{run_id}"
            plain_future = self.client.scatter({plain_name: dict(plains)}, timeout=remaining)[plain_name]
            scattered = [*ct_futures.values(), plain_future]
            key_future = self._key_future(keyset_id, keys)
            futures = [
                self.client.submit(_run_part, keyset_id, key_future, params, self.cache_size,
                                   parts[n].plan.to_json(), {read: ct_futures[read] for read in parts[n].reads},
                                   plain_future, key=f"einfhe-part-{run_id}-{n}", retries=self.retries, pure=False)
                for n in pending
            ]
            _settle(futures, deadline)
            return [n for n, future in zip(pending, futures) if not _collect(plan, n, future, results)]
        except (TimeoutError, distributed.TimeoutError) as exc:
            self.client.cancel(futures)
            raise DistributedError(f"the run did not finish within {self.timeout:.0f} s", spec=plan.spec) from exc
        except OSError:  # a worker died while the inputs were sent to it (CommClosedError): the round is lost
            self.client.cancel(futures)
            return list(pending)
        finally:
            for future in [*futures, *scattered]:
                future.release()
