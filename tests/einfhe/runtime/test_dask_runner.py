"""Plans on a Dask LocalCluster of 2 worker processes (loopback, small insecure rings): the same decrypted
results as the local run, keys cached per worker and bounded, typed errors, and a worker killed mid-job."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import einfhe
from einfhe import DistributedError
from einfhe.crypto import KeyMismatchError, cached_key_sets
from einfhe.runtime.dask_runner import DaskRunner
from einfhe.compiler.model import Linear, Square, compile_model

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.fhe, pytest.mark.timeout(120)]
SLOTS = 32
ATOL = 1e-6  # CKKS at scale 2^40 on these rings: ~1e-9 measured; a layout bug gives O(1)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  env={"OMP_NUM_THREADS": "1"}) as cluster, distributed.Client(cluster) as c:
        yield c


def _job(plan, seed=0):
    """A context for `plan` on an insecure ring, its key blob, and a runner-ready view of it."""
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, plan.slots))
    return ctx, einfhe.evaluation_keys_to_bytes(ctx)


@pytest.fixture(scope="module")
def matmul():
    """A @ B with A (8, 8) encrypted across 32 ciphertexts (4 output tiles) and B plain."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((8, 8)), rng.standard_normal((8, 12))
    plan = einfhe.compile("ij,jk->ik", einfhe.cipher(A.shape), B, slots=SLOTS)
    ctx, keys = _job(plan)
    xe = einfhe.encrypt(ctx, A, plan.input_layout(0))
    return {"A": A, "B": B, "plan": plan, "ctx": ctx, "keys": keys, "x": einfhe.tensor_to_bytes(ctx, xe),
            "local": einfhe.decrypt(ctx, einfhe.run(ctx, plan, xe, B))}


def _run(runner, job, keyset_id="alice-1"):
    out = runner.run(job["plan"], keyset_id, job["keys"], {0: job["x"]}, {1: job["B"]},
                     params=job["ctx"].params.to_json())
    return einfhe.decrypt(job["ctx"], einfhe.tensor_from_bytes(job["ctx"], out))


def test_multi_ciphertext_einsum_matches_the_local_run(client, matmul):
    assert matmul["plan"].cts_in >= 4 and matmul["plan"].cts_out >= 4
    got = _run(DaskRunner(client), matmul)
    np.testing.assert_allclose(got, matmul["local"], atol=ATOL)
    np.testing.assert_allclose(got, matmul["A"] @ matmul["B"], atol=ATOL)


def test_batch_of_model_inferences_matches_the_local_run(client):
    rng = np.random.default_rng(1)
    W, b = rng.standard_normal((4, 6)), rng.standard_normal(4)
    model = compile_model([Linear(W, b), Square()], 6, batch=16, slots=16)
    ctx, keys = _job(model.plan)
    X = rng.uniform(-1, 1, (16, 6))
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
    local = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe))))
    out = DaskRunner(client).run(model.plan, "model-1", keys, {0: einfhe.tensor_to_bytes(ctx, xe)},
                                 dict(enumerate(model.plains, start=1)), params=ctx.params.to_json())
    got = model.unpack_output(einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, out)))
    np.testing.assert_allclose(got, local, atol=ATOL)
    np.testing.assert_allclose(got, (X @ W.T + b) ** 2, atol=ATOL)


def test_bootstrapped_model_matches_the_local_run(client):
    """A batched plan with bootstraps and no rotations: its bootstrapping keys travel in the key blob (they were
    left out where a plan rotated nothing, and a worker's bootstrap aborted the process), and the workers'
    refreshed ciphertexts decrypt to the local run's within one bootstrap's error, run whole or stage by stage."""
    rng = np.random.default_rng(2)
    W1, W2 = rng.uniform(-0.5, 0.5, (4, 6)), rng.uniform(-0.5, 0.5, (3, 4))
    model = compile_model([Linear(W1), Square(), Linear(W2), Square()], 6, batch=8, slots=8, max_depth=2)
    assert model.plan.bootstraps > 0 and not model.plan.rotations
    ctx = einfhe.Context.for_plan(model.plan, params=einfhe.Parameters.insecure_for_tests(2, 8, bootstrap=True))
    X = rng.uniform(-1, 1, (8, 6))
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout, level=model.input_level(ctx.params))
    local = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe))))
    keys, blob = einfhe.evaluation_keys_to_bytes(ctx), einfhe.tensor_to_bytes(ctx, xe)
    for staged in (False, True):  # one part; then stage by stage, a part per ciphertext of each layer
        out = DaskRunner(client).run(model.plan, "boot-1", keys, {0: blob}, dict(enumerate(model.plains, start=1)),
                                     params=ctx.params.to_json(), staged=staged)
        got = model.unpack_output(einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, out)))
        # one bootstrap's error at this ring (gap 5, values below 1) is about 2^-14 (einfhe.params.bootstrap);
        # OpenFHE's decryption adds noise of that order, so two decryptions of one result differ by about as much
        np.testing.assert_allclose(got, local, atol=2.0**-14)
        np.testing.assert_allclose(got, ((X @ W1.T) ** 2 @ W2.T) ** 2, atol=2.0**-10)


class _Threads:
    """A stand-in client that only reports its workers' threads."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def nthreads(self) -> dict:
        return {f"worker-{k}": 1 for k in range(self.workers)}


def test_parts_that_share_plaintexts_are_one_per_worker_thread_others_two():
    runner = DaskRunner(_Threads(2))
    tiled = einfhe.compile("ij,jtk->itk", np.ones((64, 64)), einfhe.cipher((64, 8, 8)), slots=512)
    batched = einfhe.compile("bij,bjk->bik", einfhe.cipher((16, 4, 4)), einfhe.cipher((16, 4, 4)), slots=SLOTS)
    assert len(runner.parts(tiled)) == 2 and len(runner.parts(batched)) == 4


def test_workers_cache_key_sets_by_id_within_the_bound(client, matmul):
    runner = DaskRunner(client, cache_size=1)
    _run(runner, matmul, "alice-1")
    assert set().union(*client.run(cached_key_sets).values()) == {"alice-1"}
    other = dict(matmul)
    other["ctx"], other["keys"] = _job(matmul["plan"])
    other["x"] = einfhe.tensor_to_bytes(other["ctx"], einfhe.encrypt(other["ctx"], matmul["A"],
                                                                     matmul["plan"].input_layout(0)))
    np.testing.assert_allclose(_run(runner, other, "bob-1"), matmul["A"] @ matmul["B"], atol=ATOL)
    cached = client.run(cached_key_sets)
    assert all(len(ids) <= 1 for ids in cached.values()) and "bob-1" in set().union(*cached.values())


def test_ciphertexts_of_another_key_set_are_refused(client, matmul):
    ctx, _ = _job(matmul["plan"])
    foreign = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matmul["A"], matmul["plan"].input_layout(0)))
    with pytest.raises(KeyMismatchError):
        DaskRunner(client, retries=0).run(matmul["plan"], "alice-2", matmul["keys"], {0: foreign},
                                          {1: matmul["B"]}, params=matmul["ctx"].params.to_json())


def test_a_failing_task_raises_its_typed_error(client, matmul):
    with pytest.raises(einfhe.EinsumError, match="shape"):
        DaskRunner(client, retries=1).run(matmul["plan"], "alice-1", matmul["keys"], {0: matmul["x"]},
                                          {1: np.ones((3, 3))}, params=matmul["ctx"].params.to_json())


def test_a_run_past_its_timeout_raises_distributed_error(client, matmul):
    with pytest.raises(DistributedError, match="did not finish"):
        _run(DaskRunner(client, timeout=1e-6), matmul)


def test_a_connection_closed_while_sending_inputs_loses_the_round_not_the_run(client, matmul, monkeypatch):
    """A worker that dies while its inputs are scattered closes the connection (CommClosedError): the runner
    sends the inputs again in its next round and the result is complete and right."""
    from distributed.comm.core import CommClosedError

    scatter, calls = client.scatter, []

    def scatter_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise CommClosedError("in <TCP (closed)>: Stream is closed")
        return scatter(*args, **kwargs)

    monkeypatch.setattr(client, "scatter", scatter_failing_once)
    got = _run(DaskRunner(client, retries=1), matmul, "alice-comm")
    assert len(calls) > 1
    np.testing.assert_allclose(got, matmul["A"] @ matmul["B"], atol=ATOL)


@pytest.mark.filterwarnings("ignore:coroutine 'FutureState.wait' was never awaited:RuntimeWarning")
def test_a_worker_killed_mid_job_and_the_job_still_finishes(client, matmul):
    """SIGKILL one worker process while it runs a part: the nanny restarts it and the scheduler re-runs
    the lost parts elsewhere; the result is complete and right."""
    pids = client.run(os.getpid)
    runner = DaskRunner(client, max_parts=len(matmul["plan"].outputs))
    result, killed = {}, {}

    def job():
        result["y"] = _run(runner, matmul, "alice-kill")

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 30
    while not killed and time.monotonic() < deadline and thread.is_alive():
        busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed["addr"] = busy[0]
        time.sleep(0.001)
    thread.join(timeout=90)
    assert killed, "the job finished before a worker could be killed"
    assert not thread.is_alive()
    np.testing.assert_allclose(result["y"], matmul["A"] @ matmul["B"], atol=ATOL)
    client.wait_for_workers(2, timeout=30)
    assert killed["addr"] not in client.run(os.getpid)


def test_an_encoder_layer_with_bootstraps_runs_stage_by_stage_on_the_cluster(client):
    """A tiny transformer layer in the row packing, bootstraps placed inside it (ring 512): each of its plans
    runs through the runner cut at its level changes, the independent ciphertexts of a stage (the feed-forward
    chunks, their bootstraps) in parts of their own; the result decrypts to the polynomial layer within the
    layer's CKKS and bootstrap bound (tests/encoder_bounds.py; OpenFHE's bootstraps are not bit-reproducible, so
    two runs, local or not, differ by about that much)."""
    from einfhe.compiler.transformer import EncoderWeights, calibrate_encoder, compile_packed_layer, encoder_layer
    from einfhe.compiler.transformer.refresh import place_bootstraps
    from einfhe.plan.partition import partition
    from einfhe.plan.stages import stages
    from encoder_bounds import bootstrapped_bound

    rng = np.random.default_rng(0)
    weights = EncoderWeights.random(rng, 16, 2, 32)
    blocks = calibrate_encoder(weights, [rng.normal(size=(8, 16)) for _ in range(8)])
    program, _ = place_bootstraps(compile_packed_layer(weights, blocks, 8, slots=256), 12, 256)
    params = einfhe.Parameters.insecure_for_tests(program.depth, 256, bootstrap=True)
    x = rng.normal(size=(8, 16))
    bound = bootstrapped_bound(weights, blocks, program, params, x, 32)
    ctx = einfhe.Context.for_plan(*program.plans, params=params)
    run_plan = DaskRunner(client).tensor_runner(ctx, "layer-1", einfhe.evaluation_keys_to_bytes(ctx))
    got = einfhe.decrypt(ctx, program.run(run_plan, einfhe.encrypt(ctx, x, program.input_layout)))
    assert np.abs(got - encoder_layer(weights, x, blocks)).max() <= bound
    assert run_plan.moved > 0 and sum(plan.bootstraps for plan in program.plans) >= 4
    split = [len(partition(stage.plan)) for plan in program.plans if plan.bootstraps for stage in stages(plan)]
    assert max(split) >= 2
