"""A Context: parameters, keys (on the client) and the backend that runs plans with them."""

from __future__ import annotations

from ..backends import BACKENDS, get_backend_class
from ..errors import EinfheError, PlanError
from ..params import Parameters
from ..params.flooding import NoiseFlooding
from ..plan import Plan

__all__ = ["Context"]


class Context:
    """Holds a backend with its keys and the plans it was made for; encrypt, run and decrypt go through it."""

    def __init__(self, backend, params: Parameters, plans: tuple[Plan, ...] = ()) -> None:
        self.backend = backend
        self.params = params
        self.plans = tuple(plans)

    @classmethod
    def for_plan(cls, *plans: Plan, backend: str = "openfhe", params: Parameters | None = None,
                 flooding: NoiseFlooding | None = None) -> "Context":
        """Derive 128-bit parameters from the plans (or check `params`) and generate exactly their keys;
        `flooding` makes an OpenFHE context's decryption noise-flooded (einfhe.params.flooding)."""
        if not plans:
            raise PlanError("Context.for_plan needs at least one plan")
        slots = {p.slots for p in plans}
        if len(slots) != 1:
            raise PlanError(f"plans with different slot counts {sorted(slots)} cannot share a context")
        (slots,) = slots
        depth = max(p.depth for p in plans)
        bootstrap = any(p.bootstraps for p in plans)
        if params is None:  # a plan compiled with slots="auto" was priced on a ring with a small first modulus
            small = any(p.chosen_ring is not None for p in plans)
            params = Parameters.derive(depth, slots, bootstrap=bootstrap, small_first_modulus=small,
                                       lift=flooding is None)
        params.validate()
        if params.slots != slots:
            raise PlanError(f"the parameters have {params.slots} slots but the plan uses {slots}")
        if bootstrap and not params.bootstrap:
            raise PlanError("the plan bootstraps but the parameters were made without bootstrapping")
        if params.depth < depth:
            raise PlanError(
                f"the plan needs depth {depth} but the parameters allow {params.depth}: raise the depth",
                spec=max(plans, key=lambda p: p.depth).spec,
            )
        rotations = sorted({r for p in plans for r in p.rotations})
        if backend == "simulator":
            if flooding is not None:
                raise EinfheError("noise flooding is an OpenFHE decryption mode: the simulator has no noise to flood")
            engine = get_backend_class("simulator")(slots, params.depth)
        elif backend == "openfhe":
            engine = get_backend_class("openfhe").generate(params, rotations, flooding)
        else:
            raise EinfheError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        engine.rotations = tuple(rotations)
        return cls(engine, params, plans)

    @property
    def slots(self) -> int:
        """Slots per ciphertext."""
        return self.params.slots

    @property
    def rotations(self) -> tuple[int, ...]:
        """Rotation offsets this context holds keys for."""
        return tuple(self.backend.rotations)

    def check_plan(self, plan: Plan) -> None:
        """Raise PlanError when the plan needs keys, slots or levels this context lacks."""
        if plan.slots != self.slots:
            raise PlanError(f"the plan uses {plan.slots} slots, this context {self.slots}", spec=plan.spec)
        missing = sorted(set(plan.rotations) - set(self.rotations))
        if missing:
            raise PlanError(
                f"this context has no rotation keys for offsets {missing}: make it with Context.for_plan(plan)",
                spec=plan.spec,
            )
        if plan.depth > self.params.depth:
            raise PlanError(
                f"the plan needs depth {plan.depth}, this context allows {self.params.depth}", spec=plan.spec
            )

    def __repr__(self) -> str:
        return f"Context(backend={self.backend.name!r}, {self.params}, rotations={len(self.rotations)})"
