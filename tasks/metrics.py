"""Totals every process adds to, kept in Redis so `primer-cache status` sees what all
workers (and operator commands) did: Celery's prefork children serve no metrics endpoint
of their own."""

from __future__ import annotations

import redis

from adapters.stats import stats_key
from tasks.sweep import SweepResult

__all__ = ["record_sweep", "stats_key"]


def record_sweep(client: redis.Redis, state_prefix: str, result: SweepResult) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(stats_key(state_prefix), "sweeps", 1)
    pipe.hincrby(stats_key(state_prefix), "keys_deleted", result.deleted)
    pipe.hincrby(stats_key(state_prefix), "keys_unparseable", result.unparseable)
    pipe.execute()
