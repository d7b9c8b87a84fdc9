"""Backpressure: how many published batches the workers have not finished yet.

While the workers are behind, the listener keeps coalescing instead of publishing, so one
sweep covers everything that arrived during the previous one and the lag stays bounded
(a sweep of a large keyspace costs the same for one change as for thousands).
"""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)

STALL_AFTER = 120.0  # a batch this overdue is presumed lost in the broker: stop waiting on it


def completed_key(state_prefix: str) -> str:
    return f"{state_prefix}completed"


class InFlight:
    def __init__(self, client: redis.Redis, state_prefix: str, term: str, limit: int) -> None:
        self.client = client
        self.key = completed_key(state_prefix)
        self.term = term
        self.limit = limit
        self.published = 0
        self._forgiven = 0
        self._full_since: float | None = None

    def sent(self) -> None:
        self.published += 1

    def full(self) -> bool:
        if self.limit <= 0 or self.published - self._forgiven < self.limit:
            return False
        done = int(self.client.hget(self.key, self.term) or 0)
        if self.published - max(done, self._forgiven) < self.limit:
            self._full_since = None
            return False
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        elif now - self._full_since > STALL_AFTER:
            log.warning(
                "batches of term %s unfinished for %.0f s (%d published, %d done): going on",
                self.term,
                now - self._full_since,
                self.published,
                done,
            )
            self._forgiven = self.published
            self._full_since = None
            return False
        return True


def mark_completed(client: redis.Redis, state_prefix: str, term: str) -> None:
    """Called by the invalidate task when a listener's batch is finished (or failed for good)."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(completed_key(state_prefix), term, 1)
    pipe.expire(completed_key(state_prefix), 86400)
    pipe.execute()
