"""Plans split into parts: each part a valid plan, parts disjoint in work, their outputs reassembled equal the
whole plan's, on the simulator (against einfhe.simulate and numpy) and on OpenFHE (small insecure ring)."""

import numpy as np
import pytest

import einfhe
from einfhe.backends.simulator import SimulatorBackend
from einfhe.runtime.interpreter import execute
from einfhe.compiler.model import Linear, Quadratic, Square, compile_model
from einfhe.plan.partition import Part, assemble, partition, shares_plaintexts
from einfhe.plan import Load

SLOTS = 32
CASES = [  # spec, shapes, cipher/plain per operand
    ("ij,jk->ik", [(8, 8), (8, 12)], "cp"),
    ("bij,bjk->bik", [(4, 4, 4), (4, 4, 4)], "cc"),
    ("ij,ij->ij", [(16, 16), (16, 16)], "cc"),
    ("ij,j->i", [(24, 16), (16,)], "pc"),
    ("ik,kj->ij", [(3, 4), (4, 2)], "cc"),
]


def _compile(spec, shapes, kinds, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    operands = [einfhe.cipher(a.shape) if k == "c" else a for a, k in zip(arrays, kinds)]
    return einfhe.compile(spec, *operands, slots=SLOTS), arrays


def _simulate_parts(plan, parts, arrays):
    """Run every part on its own simulator with only the ciphertexts it reads, and reassemble."""
    backend = SimulatorBackend(plan.slots)
    packed = {op.operand: op.layout.pack(arrays[op.operand]) for op in plan.cipher_inputs}
    plains = {op.operand: arrays[op.operand] for op in plan.operands if not hasattr(op, "layout")}
    results = []
    for part in parts:
        ciphers = {op.operand: [None] * op.layout.num_cts for op in plan.cipher_inputs}
        for operand, ct in part.reads:
            ciphers[operand][ct] = backend.encrypt(packed[operand][ct])
        results.append(execute(part.plan, backend, ciphers, plains))
    outputs = assemble(plan, parts, results)
    return plan.output_layout.unpack(np.stack([backend.decrypt(ct) for ct in outputs]))


@pytest.mark.parametrize("spec, shapes, kinds", CASES)
@pytest.mark.parametrize("max_parts", [None, 2, 1])
def test_parts_reassemble_to_the_whole_plan(spec, shapes, kinds, max_parts):
    plan, arrays = _compile(spec, shapes, kinds)
    parts = partition(plan, max_parts)
    got = _simulate_parts(plan, parts, arrays)
    np.testing.assert_allclose(got, einfhe.simulate(plan, *arrays), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, np.einsum(spec, *arrays), rtol=1e-9, atol=1e-9)
    assert max_parts is None or len(parts) <= max_parts


@pytest.mark.parametrize("spec, shapes, kinds", CASES)
def test_parts_are_valid_disjoint_subplans(spec, shapes, kinds):
    plan, _ = _compile(spec, shapes, kinds)
    parts = partition(plan)
    assert sorted(p for part in parts for p in part.positions) == list(range(len(plan.outputs)))
    work = [{s for s in part.plan.steps if not isinstance(s, Load)} for part in parts]
    assert sum(len(w) for w in work) == len(set().union(*work)) == sum(not isinstance(s, Load) for s in plan.steps)
    for part in parts:
        assert einfhe.Plan.from_json(part.plan.to_json()) == part.plan
        assert set(part.plan.steps) <= set(plan.steps)
        assert part.plan.outputs == tuple(plan.outputs[p] for p in part.positions)
        assert part.plan.depth <= plan.depth and set(part.plan.rotations) <= set(plan.rotations)


def test_independent_tiles_become_separate_parts():
    plan, _ = _compile("ij,jk->ik", [(8, 8), (8, 12)], "cp")
    parts = partition(plan)
    assert plan.cts_in >= 4 and len(parts) == len(plan.outputs) >= 4
    assert all(len(part.reads) < plan.cts_in for part in parts)


def test_parts_that_take_the_same_plaintexts_are_told_apart():
    """Column tiles of a cipher matrix times one plain matrix (bsgs): every tile takes every diagonal, so each
    part encodes them all; a batch of encrypted products takes no plaintext at all."""
    A, B = np.random.default_rng(1).standard_normal((64, 64)), np.random.default_rng(2).standard_normal((64, 4, 8))
    tiled = einfhe.compile("ij,jtk->itk", A, einfhe.cipher(B.shape), slots=512)
    parts = partition(tiled)
    assert len(parts) == 4 and shares_plaintexts(tiled)
    diagonals = [{s.plain for s in part.plan.steps if getattr(s, "plain", None) is not None} for part in parts]
    assert all(d == diagonals[0] for d in diagonals)
    batched, _ = _compile("bij,bjk->bik", [(4, 4, 4), (4, 4, 4)], "cc")
    assert len(partition(batched)) > 1 and not shares_plaintexts(batched)


def test_batched_model_splits_by_output_row_and_keeps_shared_layers_together():
    rng = np.random.default_rng(3)
    one_layer = [Linear(rng.standard_normal((4, 6)), rng.standard_normal(4)), Square()]
    two_layers = [*one_layer, Linear(rng.standard_normal((3, 4)))]
    X = rng.uniform(-1, 1, (16, 6))
    for layers, expected in ((one_layer, [(0,), (1,), (2,), (3,)]), (two_layers, [(0, 1, 2, 3)])):
        model = compile_model(layers, 6, batch=16, slots=16)
        parts = partition(model.plan)
        assert [part.positions for part in parts] == expected
        arrays = [model.pack_input(X), *model.plains]
        got = model.unpack_output(_simulate_parts(model.plan, parts, arrays))
        reference = model.unpack_output(einfhe.simulate(model.plan, *arrays))
        np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-12)


def test_quadratic_model_parts_match_numpy():
    rng = np.random.default_rng(4)
    W, b = rng.standard_normal((4, 6)), rng.standard_normal(4)
    act = Quadratic(0.1, 0.5, 0.2)
    model = compile_model([Linear(W, b), act], 6, batch=8, slots=8)
    X = rng.uniform(-1, 1, (8, 6))
    got = model.unpack_output(_simulate_parts(model.plan, partition(model.plan, 3),
                                              [model.pack_input(X), *model.plains]))
    h = X @ W.T + b
    np.testing.assert_allclose(got, act.a * h**2 + act.b * h + act.c, rtol=1e-9, atol=1e-9)


def test_bad_arguments_raise_plan_errors():
    plan, _ = _compile("ij,ij->ij", [(16, 16), (16, 16)], "cc")
    with pytest.raises(einfhe.PlanError, match="max_parts"):
        partition(plan, 0)
    parts = partition(plan)
    with pytest.raises(einfhe.PlanError, match="result lists"):
        assemble(plan, parts, [])
    with pytest.raises(einfhe.PlanError, match="produced by no part"):
        assemble(plan, parts[:1], [[None] * len(parts[0].positions)])
    twice = (parts[0], Part(parts[0].plan, parts[0].positions))
    with pytest.raises(einfhe.PlanError, match="two parts"):
        assemble(plan, twice, [[None] * len(parts[0].positions)] * 2)


@pytest.mark.fhe
def test_parts_on_openfhe_match_the_whole_run():
    plan, (A, B) = _compile("ij,jk->ik", [(8, 8), (8, 12)], "cp", seed=5)
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, SLOTS))
    xe = einfhe.encrypt(ctx, A, plan.input_layout(0))
    whole = einfhe.decrypt(ctx, einfhe.run(ctx, plan, xe, B))
    parts = partition(plan, 3)
    results = []
    for part in parts:
        ciphers = {0: [xe.cts[ct] if (0, ct) in part.reads else None for ct in range(len(xe.cts))]}
        results.append(execute(part.plan, ctx.backend, ciphers, {1: B}))
    outputs = assemble(plan, parts, results)
    got = einfhe.decrypt(ctx, einfhe.EncryptedTensor(tuple(outputs), plan.output_layout))
    np.testing.assert_allclose(got, whole, atol=1e-6)
    np.testing.assert_allclose(got, A @ B, atol=1e-6)
