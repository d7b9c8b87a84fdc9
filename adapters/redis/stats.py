"""Totals every process adds to, kept in a Redis hash under the state prefix, so
`primer-cache status` sees what the listener, all workers and operator commands did
(Celery's prefork children serve no metrics endpoint of their own)."""

from __future__ import annotations

import redis


def stats_key(state_prefix: str) -> str:
    return f"{state_prefix}stats"


def add(client: redis.Redis, state_prefix: str, **counts: int) -> None:
    """Add each count to its field of the stats hash (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for name, amount in counts.items():
        pipe.hincrby(stats_key(state_prefix), name, amount)
    pipe.execute()
