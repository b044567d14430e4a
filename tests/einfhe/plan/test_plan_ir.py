"""The plan IR: `str(plan)` is a listing of one `%out = op %args ...` line per step, plans of every step type
round-trip through JSON unchanged, `Step.args` follows `inputs` for every step class, and `value_levels` agrees
with the levels the simulator's ciphertexts reach."""

import dataclasses
import json
import re

import numpy as np
import pytest

import einfhe
from einfhe.backends.simulator import SimulatorBackend
from einfhe.compiler.model import ChebyshevActivation, Linear, compile_model
from einfhe.layout import natural_layout
from einfhe.plan import (
    OPS, STEP_TYPES, Add, AddPlain, Bootstrap, Chebyshev, CipherInput, Diagonals, HoistedRotate, LevelReduce, Load,
    Mask, Mul, MulPlain, PlainExpr, PlainInput, PlainSlice, PlainTensor, Plan, Rescale, Rotate, RotatePrecompute, Sub,
    value_levels,
)

SLOTS = 8
VEC = natural_layout((SLOTS,), SLOTS)


def _dot_plan() -> Plan:
    """A hand-written plan for sum_j W[j] x[j]: a product, then rotate-and-sum by 4 (hoisted), 2 and 1."""
    steps = (
        Load(0, 1, 0), MulPlain(1, 0, PlainTensor("W", VEC, 0)), Rescale(2, 1), RotatePrecompute(3, 2),
        HoistedRotate(4, 2, 3, 4), Add(5, 2, 4), Rotate(6, 5, 2), Add(7, 5, 6), Rotate(8, 7, 1), Add(9, 7, 8),
    )
    return Plan("j,j->", SLOTS, (PlainInput(0, (SLOTS,)), CipherInput(1, VEC)), (PlainExpr("W", "j->j", ("op0",)),),
                steps, (9,), natural_layout((), SLOTS), strategy="by-hand")


def _compiled_plans() -> dict[str, Plan]:
    """Compiled plans that between them hold every step type, plaintext kind and plain-program op."""
    rng = np.random.default_rng(0)
    model = compile_model([Linear(rng.random((4, 4)), rng.random(4)), ChebyshevActivation.fit(np.tanh, -1, 1, 5),
                           Linear(rng.random((3, 4)))], 4, batch=4, slots=4, max_depth=5)
    return {
        "bsgs": einfhe.compile("ij,j->i", rng.random((8, 8)), einfhe.cipher((8,)), slots=16, strategy="bsgs"),
        "relayout": einfhe.compile("ij,jk->ik", einfhe.cipher((3, 4), natural_layout((3, 4), 64)),
                                   einfhe.cipher((4, 5), natural_layout((4, 5), 64)), slots=64),
        "reduce": einfhe.compile("ij->i", einfhe.cipher((8, 8)), slots=64),
        "diagonal-of": einfhe.compile("ii->i", einfhe.cipher((4, 4)), slots=64),
        "model": model.plan,
    }


def _operands(plan: Plan, rng) -> list[np.ndarray]:
    return [rng.standard_normal(op.layout.shape if isinstance(op, CipherInput) else op.shape) for op in plan.operands]


_LINE = re.compile(r"  %(\d+) = (\w+) (.*)")
_ARGS = re.compile(r"(%\d+(?:, %\d+)*)(?:, (.+?))?(?: by (-?\d+))?(?: degree (\d+) on \[(\S+), (\S+)\])?")


def _check_line(line: str, step) -> None:
    """Parse one listing line and compare every part with the step it prints."""
    out, op, rest = _LINE.fullmatch(line).groups()
    assert (int(out), op) == (step.out, step.op)
    if isinstance(step, Load):
        assert rest == f"op{step.operand}[ct {step.ct}]"
        return
    args, plain, offset, degree, lo, hi = _ARGS.fullmatch(rest).groups()
    assert tuple(int(a) for a in re.findall(r"%(\d+)", args)) == step.args
    assert (offset is not None) == hasattr(step, "offset")
    if offset is not None:
        assert int(offset) == step.offset
    ref = getattr(step, "plain", None)
    if isinstance(ref, Mask):
        ranges = re.fullmatch(r"mask\[(.*)\]", plain).group(1)
        assert [tuple(map(int, r.split(":"))) for r in ranges.split(", ") if r] == [tuple(r) for r in ref.ranges]
    elif isinstance(ref, PlainSlice):
        assert plain == f"{ref.name}[row {ref.index}]"
    elif isinstance(ref, PlainTensor):
        assert plain == f"{ref.name}[ct {ref.ct}]"
    else:
        assert plain is None
    assert (degree is not None) == isinstance(step, Chebyshev)
    if degree is not None:
        assert int(degree) == len(step.coeffs) - 1 and (float(lo), float(hi)) == (step.lo, step.hi)


def test_the_hand_written_plan_computes_the_dot_product():
    """The listing examples' plan is a real plan: on the simulator it gives W @ x."""
    rng = np.random.default_rng(1)
    W, x = rng.standard_normal(SLOTS), rng.standard_normal(SLOTS)
    np.testing.assert_allclose(einfhe.simulate(_dot_plan(), W, x), W @ x, rtol=1e-12, atol=1e-12)


def test_listing_prints_one_line_per_step_in_the_documented_form():
    """str(plan): a header, the operands, the plain program, `%7 = rotate %5 by 2`-style steps and the return."""
    lines = str(_dot_plan()).splitlines()
    assert lines[0] == "plan 'j,j->'  slots=8  strategy=by-hand"
    assert lines[1:4] == ["  op0: plain shape (8,)", f"  op1: cipher {VEC}", "  W = einsum 'j->j' op0"]
    assert lines[4:-1] == [
        "  %0 = load op1[ct 0]", "  %1 = mul_plain %0, W[ct 0]", "  %2 = rescale %1", "  %3 = hoist %2",
        "  %4 = rotate_hoisted %2, %3 by 4", "  %5 = add %2, %4", "  %6 = rotate %5 by 2", "  %7 = add %5, %6",
        "  %8 = rotate %7 by 1", "  %9 = add %7, %8",
    ]
    assert lines[-1] == "  return %9 in [scalar] in 8 slots"


def test_listing_prints_masks_slices_biases_and_series():
    """The other step kinds print their plaintext (mask ranges, a row of a stack) or series on their line."""
    steps = (Load(0, 0, 0), MulPlain(1, 0, Mask(((0, 2), (4, 6)), SLOTS)), MulPlain(2, 0, PlainSlice("D", VEC, 3)),
             AddPlain(3, 1, PlainTensor("b", VEC, 0)), Sub(4, 3, 2), Mul(5, 4, 4), LevelReduce(6, 5),
             Chebyshev(7, 6, (1.0, 0.5, 0.25), -2.0, 3.0), Bootstrap(8, 7))
    plan = Plan("i->i", SLOTS, (CipherInput(0, VEC),), (), steps, (8,), VEC)
    lines = str(plan).splitlines()[2:-1]
    assert lines == [
        "  %0 = load op0[ct 0]", "  %1 = mask %0, mask[0:2, 4:6]", "  %2 = mul_plain %0, D[row 3]",
        "  %3 = add_plain %1, b[ct 0]", "  %4 = sub %3, %2", "  %5 = mul %4, %4", "  %6 = level_reduce %5",
        "  %7 = chebyshev %6 degree 2 on [-2, 3]", "  %8 = bootstrap %7",
    ]
    for line, step in zip(lines, steps):
        _check_line(line, step)


@pytest.mark.parametrize("name", ["bsgs", "relayout", "reduce", "diagonal-of", "model"])
def test_listing_of_a_compiled_plan_has_a_parsable_line_per_step(name):
    """Every step of a compiled plan has exactly one line whose fields parse back to that step's fields."""
    plan = _compiled_plans()[name]
    lines = str(plan).splitlines()
    assert len(lines) == 1 + len(plan.operands) + len(plan.plain_program) + len(plan.steps) + 1
    step_lines = [line for line in lines if _LINE.fullmatch(line)]
    assert len(step_lines) == len(plan.steps)
    for line, step in zip(step_lines, plan.steps):
        _check_line(line, step)
    assert lines[-1] == f"  return {', '.join(f'%{v}' for v in plan.outputs)} in {plan.output_layout}"


def test_the_round_trip_plans_cover_every_step_type_and_plaintext_kind():
    """The JSON round-trip cases hold all of STEP_TYPES, all three plaintext kinds and both plain ops."""
    plans = [_dot_plan(), *_compiled_plans().values()]
    steps = [s for p in plans for s in p.steps]
    assert {type(s) for s in steps} == set(STEP_TYPES.values())
    assert {type(s.plain) for s in steps if hasattr(s, "plain")} == {PlainTensor, PlainSlice, Mask}
    assert {type(e) for p in plans for e in p.plain_program} == {PlainExpr, Diagonals}


@pytest.mark.parametrize("name", ["by-hand", "bsgs", "relayout", "reduce", "diagonal-of", "model"])
def test_json_round_trip_gives_an_equal_plan_that_computes_the_same(name):
    """Plan.from_json(plan.to_json()) equals the plan, prints the same and gives bit-identical simulated results."""
    plan = _dot_plan() if name == "by-hand" else _compiled_plans()[name]
    text = plan.to_json()
    assert json.loads(text)["format"] == "einfhe.plan/1"
    again = Plan.from_json(text)
    assert again == plan and str(again) == str(plan) and again.to_json() == text
    assert (again.depth, again.rotations, again.op_counts()) == (plan.depth, plan.rotations, plan.op_counts())
    operands = _operands(plan, np.random.default_rng(2))
    np.testing.assert_array_equal(einfhe.simulate(again, *operands), einfhe.simulate(plan, *operands))


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d["steps"][0].update(type="Teleport"), "unknown step type 'Teleport'"),
    (lambda d: d["plain_program"].append({"type": "Fourier", "out": "F"}), "unknown plain op 'Fourier'"),
    (lambda d: d["plain_program"].append({"type": "Diagonals", "out": "D", "src": "op0", "d": 8, "baby": 2,
                                          "giant": 2, "replicas": 1, "span": 8}), "baby \\* giant \\* replicas"),
    (lambda d: d.update(format="einfhe.plan/0"), "unsupported plan format"),
    (lambda d: d["steps"][1].pop("src"), "malformed plan JSON"),
])
def test_damaged_plan_json_is_refused_with_a_plan_error(edit, fragment):
    """A plan dict with an unknown step or plain op, inconsistent diagonals, another format or a missing field."""
    data = json.loads(_dot_plan().to_json())
    edit(data)
    with pytest.raises(einfhe.PlanError, match=fragment):
        Plan.from_json(json.dumps(data))


def _sample_step(cls):
    """An instance of a step class with a distinct value in each field, and those values by field name."""
    samples = {"plain": PlainTensor("W", VEC, 0), "coeffs": (1.0, 2.0, 3.0), "lo": -1.0, "hi": 1.0}
    values = {f.name: samples.get(f.name, 100 + k) for k, f in enumerate(dataclasses.fields(cls))}
    return cls(**values), values


@pytest.mark.parametrize("name", sorted(STEP_TYPES))
def test_step_args_follow_inputs(name):
    """For every step class, `inputs` names exactly its value-id fields and `args` reads them in that order."""
    cls = STEP_TYPES[name]
    step, values = _sample_step(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    assert fields[0] == "out" and "out" not in cls.inputs
    assert step.args == tuple(values[f] for f in cls.inputs)
    assert set(cls.inputs) == {"src", "a", "b", "digits"} & set(fields)
    assert cls.__name__ == name and step.op in OPS


def test_every_op_name_belongs_to_one_step_kind():
    """The step classes (a mul_plain by a mask counting as `mask`) print exactly the op names of OPS, once each."""
    ops = [_sample_step(cls)[0].op for cls in STEP_TYPES.values()]
    ops.append(MulPlain(0, 1, Mask(((0, 1),), SLOTS)).op)
    assert sorted(ops) == sorted(OPS)


_SIM = {
    "mul_plain": lambda be, v, s: be.mul_plain(v[s.src], np.ones(be.slots)),
    "mask": lambda be, v, s: be.mul_plain(v[s.src], np.ones(be.slots)),
    "add_plain": lambda be, v, s: be.add_plain(v[s.src], np.ones(be.slots)),
    "mul": lambda be, v, s: be.mul(v[s.a], v[s.b]),
    "add": lambda be, v, s: be.add(v[s.a], v[s.b]),
    "sub": lambda be, v, s: be.sub(v[s.a], v[s.b]),
    "rotate": lambda be, v, s: be.rotate(v[s.src], s.offset),
    "hoist": lambda be, v, s: be.precompute_rotations(v[s.src]),
    "rotate_hoisted": lambda be, v, s: be.rotate_hoisted(v[s.src], v[s.digits], s.offset),
    "rescale": lambda be, v, s: be.rescale(v[s.src]),
    "level_reduce": lambda be, v, s: be.level_reduce(v[s.src]),
    "bootstrap": lambda be, v, s: be.bootstrap(v[s.src]),
    "chebyshev": lambda be, v, s: be.chebyshev(v[s.src], s.coeffs, s.lo, s.hi),
}


def _simulated_levels(steps, slots) -> dict[int, int]:
    """The level each value's ciphertext has on the simulator, running the steps one by one on ones."""
    backend, values = SimulatorBackend(slots), {}
    for step in steps:
        values[step.out] = (backend.encrypt(np.ones(slots)) if isinstance(step, Load)
                            else _SIM[step.op](backend, values, step))
    return {out: backend.level(ct) for out, ct in values.items()}


def test_value_levels_follow_rescales_level_drops_series_and_bootstraps():
    """Rescales and level drops add 1, a degree-5 series 4, a sum its deeper input, a bootstrap resets: as simulated."""
    steps = (Load(0, 0, 0), Rescale(1, 0), LevelReduce(2, 1), Add(3, 2, 0), Chebyshev(4, 3, (1, 0, 0, 0, 0, 1), -2, 2),
             Bootstrap(5, 4), Mul(6, 5, 0), Rescale(7, 6), Sub(8, 7, 4))
    levels = value_levels(steps)
    assert levels == _simulated_levels(steps, SLOTS)
    assert [levels[v] for v in range(9)] == [0, 1, 2, 2, 6, 0, 0, 1, 6]


@pytest.mark.parametrize("name", ["by-hand", "bsgs", "relayout", "reduce", "diagonal-of", "model"])
def test_plan_levels_and_depth_agree_with_the_simulator(name):
    """plan.levels() equals the simulated level of every value, and plan.depth is the deepest of them."""
    plan = _dot_plan() if name == "by-hand" else _compiled_plans()[name]
    simulated = _simulated_levels(plan.steps, plan.slots)
    assert plan.levels() == simulated
    assert plan.depth == max(simulated.values())
