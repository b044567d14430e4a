"""The floor price of each op: the least the cost model charges for it on any level of any context with these slots
(one RNS tower, the smallest ring). A plan's floor-priced steps are a lower bound of its estimated cost, which lets
the compiler give up a candidate part-way once that bound passes the cost of a plan it already has.
"""

from __future__ import annotations

from ..errors import PlanError
from ..plan.cost import CostModel, EncodedPlaintexts, cached_op, load_cost_model, ring_for

__all__ = ["FloorPrices", "MemoizedCostModel"]

class FloorPrices:
    """The least a step can cost: its op's price at its level in a context of the depth the plan has reached so
    far, with the ring that depth needs. A deeper final context only has more towers and a ring at least as large,
    so the sum over a plan's steps is a lower bound of its estimate. A plaintext op is floored at its cached price
    where `encoded_plaintexts()`, the backend's cache with the smallest plaintexts any context has (so it holds at
    least what the estimate's cache holds), still has its plaintext."""

    def __init__(self, slots: int, model: CostModel | None = None) -> None:
        self.slots = slots
        self.model = model or load_cost_model()
        self._prices: dict[tuple[str, int, int], float] = {}
        self.encrypt = self.model.price("encrypt", ring_for(slots, 1), 1, 1)

    def encoded_plaintexts(self) -> EncodedPlaintexts:
        """An empty model of the plaintext cache, its entries as small as on the smallest ring at depth 1."""
        return EncodedPlaintexts(ring_for(self.slots, 1), 1, self.slots)

    def price(self, op: str, depth: int, level: int, reused: bool = False) -> float:
        """Floor seconds of one `op` whose output is at `level` once the plan has reached `depth` (0 if unpriced),
        its plaintext already encoded if `reused`."""
        depth = max(1, depth)
        op = cached_op(op) if reused else op
        key = (op, depth, level)
        if key not in self._prices:
            try:
                self._prices[key] = self.model.price(op, ring_for(self.slots, depth), depth, min(level, depth))
            except PlanError:  # not priced (bootstrap, chebyshev): no floor
                self._prices[key] = 0.0
        return self._prices[key]


class MemoizedCostModel:
    """A cost model that looks each (op, ring, depth, level, key shape) price up once: compiling prices every step
    of every trial, and the table lookup behind one price is far dearer than the dict hit."""

    def __init__(self, model: CostModel) -> None:
        self.model = model
        self._prices: dict[tuple, float] = {}

    def price(self, op: str, ring_dim: int, depth: int, level: int, shape: tuple | None = None) -> float:
        """`CostModel.price`, remembered."""
        key = (op, ring_dim, depth, level, shape)
        if key not in self._prices:
            self._prices[key] = self.model.price(op, ring_dim, depth, level, shape)
        return self._prices[key]

    def __getattr__(self, name: str):
        return getattr(self.model, name)
