"""Plans cut into stages at level changes: run stage after stage (each stage's parts apart, with only the values it
reads), a bootstrapped model with a residual block gives exactly the whole plan's result on the simulator, and the
stages split into many independent parts where the whole plan is one."""

import numpy as np

from einfhe.backends.simulator import SimulatorBackend
from einfhe.compiler.model import Linear, Residual, Square, compile_model
from einfhe.plan import Load
from einfhe.plan.partition import assemble, partition
from einfhe.plan.stages import stages
from einfhe.runtime.interpreter import execute


def _deep_model(rng):
    """A 6-wide MLP with a residual block and a 3-level cap: bootstraps, a skip across levels, mixing layers."""
    W = [rng.uniform(-0.4, 0.4, (6, 6)) for _ in range(4)]
    layers = [Linear(W[0]), Square(), Residual((Linear(W[1]), Square(), Linear(W[2]))), Square(), Linear(W[3])]

    def reference(X):
        h = (X @ W[0].T) ** 2
        h = h + ((h @ W[1].T) ** 2) @ W[2].T
        return (h**2) @ W[3].T

    return compile_model(layers, 6, batch=8, slots=8, max_depth=3), reference


def test_stages_run_in_turn_equal_the_whole_plan():
    rng = np.random.default_rng(3)
    model, reference = _deep_model(rng)
    plan = model.plan
    assert plan.bootstraps > 0 and len(partition(plan)) == 1
    X = rng.uniform(-1, 1, (8, 6))
    backend = SimulatorBackend(plan.slots)
    inputs = {0: [backend.encrypt(row) for row in plan.input_layout(0).pack(model.pack_input(X))]}
    plains = dict(enumerate(model.plains, start=1))
    whole = execute(plan, backend, inputs, plains)
    cut = stages(plan)
    work = [s.out for stage in cut for s in stage.plan.steps if not isinstance(s, Load)]
    assert sorted(work) == sorted(s.out for s in plan.steps if not isinstance(s, Load))  # each step once
    values, most_parts = {}, 1
    for stage in cut:
        reads = {(s.operand, s.ct) for s in stage.plan.steps if isinstance(s, Load)}
        assert all(operand in (0, stage.operand) for operand, _ in reads)
        most_parts = max(most_parts, len(partition(stage.plan)))
        parts = partition(stage.plan, max_parts=4)  # packed by price, bootstraps included
        results = [execute(part.plan, backend, {**inputs, **stage.carried_cts(values)}, plains) for part in parts]
        values.update(zip(stage.plan.outputs, assemble(stage.plan, parts, results)))
    def decrypted(cts):
        return model.unpack_output(plan.output_layout.unpack(np.stack([backend.decrypt(ct) for ct in cts])))

    got = decrypted([values[v] for v in plan.outputs])
    np.testing.assert_array_equal(got, decrypted(whole))
    np.testing.assert_allclose(got, reference(X), rtol=1e-9, atol=1e-9)
    assert most_parts >= 6  # a 6-wide layer: one part per output channel

