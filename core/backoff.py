"""Delays that double from a first value up to a cap (follow-up polls of late replicas)."""

from __future__ import annotations


def doubling(attempt: int, first: float, cap: float) -> float:
    """The delay before try number `attempt` (1, 2, ...): first, 2*first, 4*first, ..., cap."""
    return min(cap, first * 2 ** min(max(0, attempt - 1), 64))
