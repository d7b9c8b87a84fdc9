"""Delays that double from a first value up to a cap (follow-up polls of late replicas, the
listener's reconnects)."""

from __future__ import annotations


def doubling(attempt: int, first: float, cap: float) -> float:
    """The delay before try number `attempt` (1, 2, ...): first, 2*first, 4*first, ..., cap."""
    return min(cap, first * 2 ** min(max(0, attempt - 1), 64))


class Reconnects:
    """The listener's reconnects after failed terms: `first` doubling to `cap`, afresh after a
    term that ran `healthy_s` (a fault an hour after the last one is not the same outage); after
    `step_aside_after` failures in a row the leader should let its lock go."""

    def __init__(self, first: float, cap: float, healthy_s: float, step_aside_after: int) -> None:
        self.first, self.cap = first, cap
        self.healthy_s = healthy_s
        self.step_aside_after = step_aside_after
        self.failures = 0

    def failed(self, ran_s: float) -> float:
        """A term that ran `ran_s` seconds failed: the delay before the next."""
        self.failures = 1 if ran_s >= self.healthy_s else self.failures + 1
        return doubling(self.failures, self.first, self.cap)

    def succeeded(self) -> None:
        self.failures = 0

    @property
    def step_aside(self) -> bool:
        return self.failures >= self.step_aside_after
