"""The interpreter: its dispatch table runs every step type of the IR, each to its numpy meaning on the simulator;
run statistics count what ran; operands that do not fit the plan are refused before any step runs."""

import numpy as np
import pytest

import einfhe
from einfhe.backends.simulator import SimulatorBackend
from einfhe.layout import natural_layout
from einfhe.plan import (
    STEP_TYPES, Add, AddPlain, Bootstrap, Chebyshev, CipherInput, HoistedRotate, LevelReduce, Load, Mask, Mul,
    MulPlain, PlainInput, PlainSlice, PlainTensor, Plan, Rescale, Rotate, RotatePrecompute, Sub,
)
from einfhe.runtime.interpreter import _RUN, RunStats, execute

SLOTS = 8
VEC = natural_layout((SLOTS,), SLOTS)
RNG = np.random.default_rng(0)
X, Y, W = RNG.uniform(-1, 1, SLOTS), RNG.uniform(-1, 1, SLOTS), RNG.uniform(-1, 1, SLOTS)
STACK = RNG.uniform(-1, 1, (3, SLOTS))
COEFFS, LO, HI = (0.4, -0.3, 0.2, 0.1), -1.5, 1.0
MASK = ((1, 3), (6, 8))


def _mask_vector() -> np.ndarray:
    return np.array([any(a <= s < b for a, b in MASK) for s in range(SLOTS)], dtype=float)


# step type -> (the steps after loading x as %0 and y as %1, the expected output slots)
CASES = {
    "MulPlain": ([MulPlain(2, 0, PlainTensor("op2", VEC, 0))], X * W),
    "AddPlain": ([AddPlain(2, 0, PlainTensor("op2", VEC, 0))], X + W),
    "Mul": ([Mul(2, 0, 1)], X * Y),
    "Add": ([Add(2, 0, 1)], X + Y),
    "Sub": ([Sub(2, 0, 1)], X - Y),
    "Rotate": ([Rotate(2, 0, 3)], np.roll(X, -3)),
    "Rescale": ([Rescale(2, 0)], X),
    "LevelReduce": ([LevelReduce(2, 0)], X),
    "Bootstrap": ([Bootstrap(2, 0)], X),
    "RotatePrecompute": ([RotatePrecompute(2, 0), HoistedRotate(3, 0, 2, 5)], np.roll(X, -5)),
    "HoistedRotate": ([RotatePrecompute(2, 1), HoistedRotate(3, 1, 2, -2)], np.roll(Y, 2)),
    "Chebyshev": ([Chebyshev(2, 0, COEFFS, LO, HI)],
                  sum(c * np.cos(k * np.arccos((2 * X - LO - HI) / (HI - LO)))
                      for k, c in enumerate(COEFFS)) - COEFFS[0] / 2),
    "Load": ([Load(2, 1, 0)], Y),
    "mask": ([MulPlain(2, 1, Mask(MASK, SLOTS))], Y * _mask_vector()),
    "slice": ([MulPlain(2, 0, PlainSlice("op3", VEC, 2))], X * STACK[2]),
}


def _plan(steps) -> Plan:
    operands = (CipherInput(0, VEC), CipherInput(1, VEC), PlainInput(2, (SLOTS,)), PlainInput(3, (3, SLOTS)))
    steps = (Load(0, 0, 0), Load(1, 1, 0), *steps)
    return Plan("by-hand", SLOTS, operands, (), steps, (steps[-1].out,), VEC)


def test_the_dispatch_table_has_one_entry_per_step_type():
    """`_RUN` is keyed by exactly the classes of STEP_TYPES: no step type without a runner, no stale runner."""
    assert len(_RUN) == len(STEP_TYPES)
    assert set(_RUN) == set(STEP_TYPES.values())


def test_every_step_type_has_a_case_below():
    """The per-step cases below exercise every class of STEP_TYPES."""
    exercised = {type(s).__name__ for steps, _ in CASES.values() for s in steps}
    assert exercised == set(STEP_TYPES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_step_type_runs_to_its_numpy_meaning(case):
    """Each step run by the interpreter on the simulator gives the slot-wise numpy result of its definition."""
    steps, expected = CASES[case]
    got = einfhe.simulate(_plan(steps), X, Y, W, STACK)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_run_stats_count_every_step_by_op():
    """RunStats counts each op as often as the plan holds it and sums a time for every op that ran."""
    plan = einfhe.compile("ij,j->i", RNG.standard_normal((8, 8)), einfhe.cipher((8,)), slots=16, strategy="bsgs")
    stats = RunStats()
    einfhe.simulate(plan, RNG.standard_normal((8, 8)), RNG.standard_normal(8), stats=stats)
    assert {op: n for op, n in plan.op_counts().items() if n} == dict(stats.counts)
    assert set(stats.seconds) == set(stats.counts) and stats.total_seconds >= 0


def test_outputs_come_back_in_the_plans_order():
    """A plan with several outputs returns them in `outputs` order, including an input returned as is."""
    steps = (Load(0, 0, 0), Load(1, 1, 0), Add(2, 0, 1), Sub(3, 0, 1))
    plan = Plan("by-hand", SLOTS, (CipherInput(0, VEC), CipherInput(1, VEC)), (), steps, (3, 0, 2),
                natural_layout((3, SLOTS), SLOTS))
    backend = SimulatorBackend(SLOTS)
    out = execute(plan, backend, {0: [backend.encrypt(X)], 1: [backend.encrypt(Y)]}, {}, workers=1)
    np.testing.assert_allclose(np.stack([backend.decrypt(ct) for ct in out]), np.stack([X - Y, X, X + Y]),
                               rtol=1e-15, atol=1e-15)


def test_operands_that_do_not_fit_the_plan_are_refused():
    """Another slot count, a wrong number of ciphertexts or a plain operand of another shape raise before running."""
    plan = _plan(CASES["MulPlain"][0])
    backend = SimulatorBackend(SLOTS)
    ciphers = {0: [backend.encrypt(X)], 1: [backend.encrypt(Y)]}
    plains = {2: W, 3: STACK}
    with pytest.raises(einfhe.PlanError, match="the plan uses 8 slots but the backend has 16"):
        execute(plan, SimulatorBackend(16), ciphers, plains)
    with pytest.raises(einfhe.PlanError, match=r"cipher operand 1 has 2 ciphertext\(s\), the plan expects 1"):
        execute(plan, backend, {**ciphers, 1: ciphers[1] * 2}, plains)
    with pytest.raises(einfhe.EinsumError, match=r"plain operand 2 has shape \(4,\)"):
        execute(plan, backend, ciphers, {2: W[:4], 3: STACK})
    with pytest.raises(einfhe.EinsumError, match="takes 4 operands"):
        einfhe.simulate(plan, X, Y, W)
