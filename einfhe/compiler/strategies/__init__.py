"""Lowering strategies for one pairwise contraction, registered by name (`get_strategy` lists the valid ones).

A strategy takes the `Lowerer` (the plan under construction) and a `Contraction`, emits steps and returns the
result, or returns None when the contraction does not fit it. `iteration-space` fits every contraction;
`bsgs` fits a cipher vector (or batch) times a plain matrix; `jkls` a product of two cipher matrices that fit one
ciphertext each (Jiang-Kim-Lauter-Song, no client replication). With `strategy="auto"` the compiler lowers each
contraction with every strategy that fits and keeps the cheapest by the calibrated cost model.
"""

from __future__ import annotations

from typing import Callable

from ...errors import PlanError
from ..builder import Packed
from .base import Contraction, FreeCipher, Lowerer, PlainValue, Value
from .bsgs import lower_bsgs, lower_diagonal
from .iteration import lower_iteration_space
from .jkls import lower_jkls

__all__ = [
    "Contraction", "FreeCipher", "Lowerer", "PlainValue", "Value", "STRATEGIES", "AUTO",
    "register_strategy", "get_strategy", "strategy_names",
]

AUTO = "auto"
Strategy = Callable[[Lowerer, Contraction], "Packed | None"]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str, lower: Strategy) -> None:
    """Register a lowering function under `name` (a name already taken is refused)."""
    if name in STRATEGIES or name == AUTO:
        raise PlanError(f"a strategy named {name!r} is already registered")
    STRATEGIES[name] = lower


def strategy_names() -> tuple[str, ...]:
    """The valid strategy names, `auto` first."""
    return (AUTO, *STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The lowering function registered as `name`; an unknown name lists the valid ones."""
    if name not in STRATEGIES:
        raise PlanError(f"unknown strategy {name!r}; valid strategies: {', '.join(strategy_names())}")
    return STRATEGIES[name]


register_strategy("iteration-space", lower_iteration_space)
register_strategy("bsgs", lower_bsgs)
register_strategy("diagonal", lower_diagonal)
register_strategy("jkls", lower_jkls)
