"""What a compilation chose between, kept on the plan for `explain()`: the rings it priced."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RingChoice"]


@dataclass(frozen=True)
class RingChoice:
    """One ring a compilation considered: its slot count, the 128-bit ring and depth it needs, the estimated
    seconds (server steps plus client encryption; None where it does not fit), whether it won, and why."""

    slots: int
    ring_dim: int
    depth: int
    seconds: float | None
    chosen: bool
    note: str
