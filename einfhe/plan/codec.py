"""The plan's JSON codec (format `einfhe.plan/1`): `plan_to_dict`, and `plan_fields_from_dict`, which validates a
dict and returns the fields `Plan` is built from (`Plan.from_json` does that, so this module needs no `Plan`)."""

from __future__ import annotations

from dataclasses import astuple, fields

from ..errors import PlanError
from ..layout import Layout
from .budget import Budget, Footprint, PlanChoice
from .choices import RingChoice
from .operands import CipherInput, Diagonals, PlainExpr, PlainInput, PlainOp
from .steps import STEP_TYPES, Mask, PlainSlice, PlainTensor, Plaintext, Step

__all__ = ["plan_to_dict", "plan_fields_from_dict"]


def _plain_to_dict(plain: Plaintext) -> dict:
    if isinstance(plain, Mask):
        return {"mask": [list(r) for r in plain.ranges], "slots": plain.slots}
    if isinstance(plain, PlainSlice):
        return {"name": plain.name, "layout": plain.layout.to_json(), "index": plain.index}
    return {"name": plain.name, "layout": plain.layout.to_json(), "ct": plain.ct}


def _plain_from_dict(data: dict) -> Plaintext:
    if "mask" in data:
        return Mask(tuple((int(a), int(b)) for a, b in data["mask"]), int(data["slots"]))
    if "index" in data:
        return PlainSlice(str(data["name"]), Layout.from_json(data["layout"]), int(data["index"]))
    return PlainTensor(str(data["name"]), Layout.from_json(data["layout"]), int(data["ct"]))


def _step_to_dict(step: Step) -> dict:
    data = {"type": type(step).__name__}
    for key, value in step.__dict__.items():
        data[key] = _plain_to_dict(value) if key == "plain" else value
    return data


def _step_from_dict(data: dict) -> Step:
    data = dict(data)
    kind = data.pop("type")
    if kind not in STEP_TYPES:
        raise PlanError(f"unknown step type {kind!r}; valid types: {', '.join(STEP_TYPES)}")
    if "plain" in data:
        data["plain"] = _plain_from_dict(data["plain"])
    return STEP_TYPES[kind](**data)


_DIAGONAL_FIELDS = ("d", "baby", "giant", "replicas", "span")


def _plain_op_to_dict(op: PlainOp) -> dict:
    if isinstance(op, Diagonals):
        return {"type": "Diagonals", "out": op.out, "src": op.src, **{k: getattr(op, k) for k in _DIAGONAL_FIELDS}}
    return {"out": op.out, "subscripts": op.subscripts, "args": list(op.args)}


def _plain_op_from_dict(data: dict) -> PlainOp:
    kind = data.get("type", "PlainExpr")
    if kind == "Diagonals":
        d, baby, giant, replicas, span = (int(data[k]) for k in _DIAGONAL_FIELDS)
        if min(d, baby, giant, replicas, span) < 1 or baby * giant * replicas != d or span != d * replicas:
            raise PlanError("malformed Diagonals: need baby * giant * replicas == d and span == d * replicas",
                            d=d, baby=baby, giant=giant, replicas=replicas, span=span)
        return Diagonals(str(data["out"]), str(data["src"]), d, baby, giant, replicas, span)
    if kind != "PlainExpr":
        raise PlanError(f"unknown plain op {kind!r}; valid types: PlainExpr, Diagonals")
    return PlainExpr(str(data["out"]), str(data["subscripts"]), tuple(str(a) for a in data["args"]))


def plan_to_dict(plan) -> dict:
    """A JSON-ready dict of `plan`."""
    operands = []
    for op in plan.operands:
        if isinstance(op, CipherInput):
            operands.append({"kind": "cipher", "operand": op.operand, "layout": op.layout.to_json()})
        else:
            operands.append({"kind": "plain", "operand": op.operand, "shape": list(op.shape)})
    return {
        "format": "einfhe.plan/1",
        "spec": plan.spec,
        "slots": plan.slots,
        "strategy": plan.strategy,
        "operands": operands,
        "plain_program": [_plain_op_to_dict(e) for e in plan.plain_program],
        "steps": [_step_to_dict(s) for s in plan.steps],
        "outputs": list(plan.outputs),
        "output_layout": plan.output_layout.to_json(),
    } | ({"ring_choices": [list(astuple(c)) for c in plan.ring_choices]} if plan.ring_choices else {}) \
      | ({"choice": _choice_to_dict(plan.choice)} if plan.choice is not None else {})


def plan_fields_from_dict(data: dict) -> dict:
    """The keyword arguments of `Plan` from `plan_to_dict`'s dict (raises PlanError on a wrong format or step type)."""
    if data.get("format") != "einfhe.plan/1":
        raise PlanError(f"unsupported plan format {data.get('format')!r}; expected 'einfhe.plan/1'")
    operands = []
    for op in data["operands"]:
        if op["kind"] == "cipher":
            operands.append(CipherInput(int(op["operand"]), Layout.from_json(op["layout"])))
        else:
            operands.append(PlainInput(int(op["operand"]), tuple(int(n) for n in op["shape"])))
    return dict(
        spec=str(data["spec"]),
        slots=int(data["slots"]),
        operands=tuple(operands),
        plain_program=tuple(_plain_op_from_dict(e) for e in data["plain_program"]),
        steps=tuple(_step_from_dict(s) for s in data["steps"]),
        outputs=tuple(int(v) for v in data["outputs"]),
        output_layout=Layout.from_json(data["output_layout"]),
        strategy=str(data.get("strategy", "iteration-space")),
        ring_choices=tuple(_ring_choice(c) for c in data.get("ring_choices", ())),
        choice=_choice_from_dict(data["choice"]) if "choice" in data else None,
    )


def _ring_choice(row: list) -> RingChoice:
    """A `RingChoice` from its JSON row [slots, ring_dim, depth, seconds, chosen, note]."""
    slots, ring_dim, depth, seconds, chosen, note = row
    return RingChoice(int(slots), int(ring_dim), int(depth), None if seconds is None else float(seconds), bool(chosen),
                      str(note))


_FOOTPRINT_FIELDS = tuple(f.name for f in fields(Footprint))


def _choice_to_dict(choice: PlanChoice) -> dict:
    """A `PlanChoice` as JSON: the budget, the chosen and the cheapest unconstrained footprints, the counts."""
    return {"key_budget": choice.budget.key_bytes, "upload_budget": choice.budget.upload_bytes,
            "chosen": {k: getattr(choice.chosen, k) for k in _FOOTPRINT_FIELDS},
            "cheapest": {k: getattr(choice.cheapest, k) for k in _FOOTPRINT_FIELDS},
            "built": choice.built, "pruned": choice.pruned}


def _footprint(data: dict) -> Footprint:
    """A `Footprint` from its JSON object (every field present, nothing else)."""
    if set(data) != set(_FOOTPRINT_FIELDS):
        raise PlanError(f"malformed plan choice: a footprint has the fields {', '.join(_FOOTPRINT_FIELDS)}",
                        got=sorted(data))
    return Footprint(str(data["label"]), float(data["seconds"]),
                     *(int(data[k]) for k in ("keys", "key_bytes", "upload_bytes", "steps")))


def _choice_from_dict(data: dict) -> PlanChoice:
    """A `PlanChoice` from `_choice_to_dict`'s object."""
    return PlanChoice(Budget(int(data["key_budget"]), int(data["upload_budget"])), _footprint(data["chosen"]),
                      _footprint(data["cheapest"]), int(data["built"]), int(data["pruned"]))
