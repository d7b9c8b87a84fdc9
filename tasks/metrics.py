"""Counters every process adds to: Prometheus metrics in-process, and totals in Redis so
`primer-cache status` sees what all workers did."""

from __future__ import annotations

import redis
from prometheus_client import Counter, Histogram

from tasks.sweep import SweepResult

KEYS_DELETED = Counter("primer_cache_keys_deleted_total", "Cached primer keys deleted by sweeps")
KEYS_UNPARSEABLE = Counter(
    "primer_cache_keys_unparseable_total", "Keys under the primer prefix that did not parse"
)
SWEEPS = Counter("primer_cache_sweeps_total", "SCAN sweeps run")
SWEEP_SECONDS = Histogram("primer_cache_sweep_seconds", "Duration of one sweep")


def stats_key(state_prefix: str) -> str:
    return f"{state_prefix}stats"


def record_sweep(
    client: redis.Redis, state_prefix: str, result: SweepResult, seconds: float
) -> None:
    SWEEPS.inc()
    KEYS_DELETED.inc(result.deleted)
    KEYS_UNPARSEABLE.inc(result.unparseable)
    SWEEP_SECONDS.observe(seconds)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(stats_key(state_prefix), "sweeps", 1)
    pipe.hincrby(stats_key(state_prefix), "keys_deleted", result.deleted)
    pipe.hincrby(stats_key(state_prefix), "keys_unparseable", result.unparseable)
    pipe.execute()
