"""The settings' groups, one frozen dataclass per concern.

A group is named for its TOML section and each field for its key, so the file's
`cache.ttl_seconds` is `settings.cache.ttl_seconds` in the code. A field declared with
`toml()` is a key of the file, with the check its value must pass (config.checks); the other
fields come from the environment only (config.environment). The database (`settings.mysql`)
and the read replicas (`settings.replicas`) have modules of their own: config.mysql,
config.replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# The key format's defaults belong to the primer server's client library, the wire contract's
# one owner.
from primer_cache_client.keys import DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE

from config import checks
from config.checks import Check, int_in
from config.query import SEED_WARM_PATTERNS, Query

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/1"  # the default cache Redis, next database
DEFAULT_STATE_PREFIX = "primer-cache:"


def toml(default: Any, check: Check) -> Any:
    """A field the TOML file sets, under its own name, once `check` passed its value."""
    return field(default=default, metadata={"check": check})


def toml_checks(group: type) -> dict[str, Check]:
    """The keys of a group's TOML section and their checks."""
    return {f.name: f.metadata["check"] for f in fields(group) if "check" in f.metadata}


@dataclass(frozen=True)
class CacheSettings:
    """The cache Redis (PRIMER_REDIS_URL) and the keys and values in it."""

    url: str = DEFAULT_REDIS_URL
    key_prefix: str = toml(DEFAULT_KEY_PREFIX, checks.text)
    key_template: str = toml(DEFAULT_KEY_TEMPLATE, checks.key_template)
    # The sidecar's own keys (checkpoint, leader lock, warm locks, stats). Must lie outside
    # the primer keys' SCAN pattern, or a sweep would delete them.
    state_prefix: str = toml(DEFAULT_STATE_PREFIX, checks.text)
    ttl_seconds: int = toml(3600, int_in(1, 30 * 86400))
    compression: bool = toml(True, checks.boolean)
    ignored_columns: frozenset[str] = toml(
        frozenset({"access_count", "last_accessed", "updated_at"}), checks.columns
    )
    second_pass_ms: int = toml(250, int_in(0, 60_000))
    # Before a batch is reported done, WAIT until this many replicas of the cache Redis have
    # its deletes (each primary's, on a cluster): a failover to a replica then cannot bring
    # a deleted key back. None (not set): 1 with a redis+sentinel:// cache URL (settings); on
    # a Redis Cluster, known only once connected, 1 for each primary that has a replica
    # configured (adapters.redis.replica_ack); else 0 (off).
    wait_replicas: int | None = toml(None, int_in(0, 16))
    wait_timeout_ms: int = toml(1000, int_in(1, 60_000))


@dataclass(frozen=True)
class CelerySettings:
    """The broker (PRIMER_BROKER_URL) and the queues on it."""

    broker_url: str = DEFAULT_BROKER_URL
    # Celery queues are named <queue_prefix>.invalidate/.warm/.maintenance; sidecars (or test
    # runs) sharing one broker keep apart by using different prefixes.
    queue_prefix: str = toml("primer", checks.identifier)


@dataclass(frozen=True)
class TablesSettings:
    """The primer database's tables the listener watches."""

    chunks: str = toml("megamind_chunks", checks.identifier)
    global_elements: str = toml("megamind_global_elements", checks.identifier)


@dataclass(frozen=True)
class WarmSettings:
    patterns: tuple[Query, ...] = toml(SEED_WARM_PATTERNS, checks.warm_patterns)
    refresh_seconds: int = toml(2700, int_in(10, 30 * 86400))  # re-warm before the TTL ends


@dataclass(frozen=True)
class RefreshSettings:
    """Refresh, not miss: after a sweep, recompute up to max_keys of the deleted keys that
    were read within idle_seconds (OBJECT FREQ >= min_freq under an LFU policy). 0 turns it
    off."""

    max_keys: int = toml(100, int_in(0, 10_000))
    idle_seconds: int = toml(60, int_in(1, 30 * 86400))
    min_freq: int = toml(6, int_in(0, 255))  # LFU counters start at 5: above it, read since


@dataclass(frozen=True)
class ListenerSettings:
    """The binlog listener; server_id and metrics_port are also set per process by
    PRIMER_SERVER_ID and PRIMER_METRICS_PORT."""

    server_id: int = toml(0, int_in(1, 2**32 - 1))  # 0: drawn at random by load_settings
    batch_max_changes: int = toml(5000, int_in(1, 100_000))
    batch_max_wait_ms: int = toml(20, int_in(0, 10_000))
    leader_ttl_ms: int = toml(1_000, int_in(500, 600_000))  # a standby takes over in about this
    max_in_flight: int = toml(2, int_in(0, 1000))  # batches published, not done; 0 = unbounded
    redeliver_after_s: int = toml(30, int_in(1, 86_400))  # no progress this long: publish again
    # The fast lane (worker.fast_lane) knows at most this many key names (a larger keyspace:
    # none, the sweeps alone); 0 turns it off.
    fast_lane_max_keys: int = toml(200_000, int_in(0, 10_000_000))
    metrics_port: int = toml(0, int_in(0, 65535))  # /metrics and /healthz here; 0 = off


@dataclass(frozen=True)
class MetricsSettings:
    """Where the processes serve /metrics and /healthz (environment only)."""

    worker_port: int = 0  # PRIMER_WORKER_METRICS_PORT, the Celery worker's main process; 0 = off
    addr: str = "127.0.0.1"  # PRIMER_METRICS_ADDR, both ports (0.0.0.0 for Kubernetes probes)


@dataclass(frozen=True)
class StatusSettings:
    max_lag_s: int = toml(60, int_in(1, 86400))  # unhealthy above this binlog lag


@dataclass(frozen=True)
class CheckSettings:
    """The consistency check beat runs."""

    sample: int = toml(0, int_in(0, 1_000_000))  # random cached keys per run; 0 = off
    every_s: int = toml(300, int_in(1, 86400))


@dataclass(frozen=True)
class PartitionSettings:
    table: str = toml("megamind_global_element_analytics_partitioned", checks.identifier)
    months_ahead: int = toml(3, int_in(0, 120))
    retain_months: int | None = toml(None, checks.optional_int_in(1, 1200))
    schedule_hour: int = toml(3, int_in(0, 23))  # UTC hour of the daily beat run
    lock_wait_timeout: int = toml(5, int_in(1, 3600))
    attempts: int = toml(5, int_in(1, 100))
    # Retention may drop partitions holding rows, or more than a few at once (tasks.partitions)
    allow_drop_rows: bool = toml(False, checks.boolean)


# The TOML file's sections read through toml_checks(); [replicas] is read by config.replicas
# (its URLs are MySQL URLs, checked against the primary).
TOML_GROUPS: dict[str, type] = {
    "cache": CacheSettings,
    "warm": WarmSettings,
    "refresh": RefreshSettings,
    "tables": TablesSettings,
    "listener": ListenerSettings,
    "partitions": PartitionSettings,
    "celery": CelerySettings,
    "status": StatusSettings,
    "check": CheckSettings,
}
