"""The worker's metrics, two ways:

- Prometheus, served by the Celery worker's main process on PRIMER_WORKER_METRICS_PORT
  (`/metrics`, `/healthz`) for every pool child: prometheus-client's multiprocess mode
  (tasks/work/multiprocess.py sets it up before prometheus_client is imported);
- totals in a Redis hash (`stats_key`) that `primer-cache status` reads: they add up across
  workers and machines, and operator commands count into them too.

The metric objects live in their own registry so no other process (a command that imports
tasks, say) serves them by accident.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterable

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.metrics_core import Metric

from adapters.observability import metrics_http
from adapters.redis.stats import stats_key as stats_key  # status reads the hash here
from core.flush_reason import TASK_FLUSHES
from tasks.work.multiprocess import ENV as MULTIPROC_ENV
from tasks.work.sweep import SweepResult

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# End to end starts at a whole-second binlog timestamp (MariaDB): sub-second buckets would
# only measure where in its second the change committed.
_END_TO_END = (0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120, 300, 600)

KEYS_SCANNED = Counter(
    "primer_cache_worker_keys_scanned_total",
    "Keys under the primer prefix that invalidation sweeps looked at",
    registry=REGISTRY,
)
KEYS_INVALIDATED = Counter(
    "primer_cache_worker_keys_invalidated_total",
    "Primer keys deleted by invalidation sweeps (flushes included)",
    registry=REGISTRY,
)
KEYS_UNPARSEABLE = Counter(
    "primer_cache_worker_keys_unparseable_total",
    "Keys under the primer keys' head that do not parse as cache keys: deleted (safe side), "
    "a sample named in the log",
    registry=REGISTRY,
)
SWEEP_SECONDS = Histogram(
    "primer_cache_worker_sweep_seconds",
    "Duration of one invalidation sweep (SCAN, judge, UNLINK)",
    buckets=_SECONDS,
    registry=REGISTRY,
)
END_TO_END_SECONDS = Histogram(
    "primer_cache_worker_end_to_end_seconds",
    "From the binlog commit time of a batch's first transaction (whole seconds on MariaDB) to "
    "the end of the pass that finishes the batch; once per batch",
    buckets=_END_TO_END,
    registry=REGISTRY,
)
REPLICA_ACK_SHORT = Counter(
    "primer_cache_worker_replica_ack_short_total",
    "Batches reported done while a cache Redis primary had fewer replicas connected than "
    "cache.wait_replicas (their deletes reach the replica when it reconnects)",
    registry=REGISTRY,
)
FALLBACK_FLUSHES = Counter(
    "primer_cache_worker_fallback_flushes_total",
    "Sweeps that deleted every primer key, by reason",
    ["reason"],
    registry=REGISTRY,
)
WARM_SECONDS = Histogram(
    "primer_cache_worker_warm_seconds",
    "Duration of one warm (query, encode, guarded write; re-runs included)",
    buckets=_SECONDS,
    registry=REGISTRY,
)
WARMS = Counter(
    "primer_cache_worker_warms_total",
    "Warms by outcome: warmed, collapsed (into one in flight), aborted (guard kept refusing)",
    ["outcome"],
    registry=REGISTRY,
)
GUARD_REFUSALS = Counter(
    "primer_cache_worker_guard_refusals_total",
    "Warm writes the race guard refused (the key was invalidated while the warm ran)",
    registry=REGISTRY,
)
REFRESHES = Counter(
    "primer_cache_worker_refreshes_total",
    "Recently read keys recomputed after their invalidation",
    registry=REGISTRY,
)
REPLICA_FOLLOWUPS = Counter(
    "primer_cache_worker_replica_followups_total",
    "Follow-up passes run for a read replica that was late or down at the sweep",
    registry=REGISTRY,
)
SWEEP_REPEATS = Counter(
    "primer_cache_worker_sweep_repeats_total",
    "Sweeps run again because a key was evicted, or the sweep outlived the fill marker, "
    "while the first ran",
    registry=REGISTRY,
)
LEASES_REVOKED = Counter(
    "primer_cache_worker_leases_revoked_total",
    "Fill leases revoked by invalidation sweeps",
    registry=REGISTRY,
)
PARTITIONS_HEADROOM = Gauge(
    "primer_cache_partitions_headroom_months",
    "Months after the current one that have their own partition, set by each ensure run",
    ["table"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
PARTITIONS_LAST_SUCCESS = Gauge(
    "primer_cache_partitions_last_success_timestamp_seconds",
    "When the last ensure run succeeded (epoch seconds)",
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
CHECK_KEYS = Gauge(
    "primer_cache_check_keys",
    "The last periodic consistency check's findings: checked, stale, missing (configured warm "
    "keys absent), undecodable",
    ["result"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
CHECK_LAST_RUN = Gauge(
    "primer_cache_check_last_run_timestamp_seconds",
    "When the last periodic consistency check finished (epoch seconds)",
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)

# Labels exported from the start (0), so a rule or a dashboard never sees a missing series.
WARM_OUTCOMES = ("warmed", "collapsed", "aborted")
CHECK_RESULTS = ("checked", "stale", "missing", "undecodable")
for _outcome in WARM_OUTCOMES:
    WARMS.labels(_outcome)
for _reason in TASK_FLUSHES:
    FALLBACK_FLUSHES.labels(_reason)
for _result in CHECK_RESULTS:
    CHECK_KEYS.labels(_result)


# ---- Redis totals (primer-cache status) --------------------------------------------------------


def record_sweep(
    client: redis.Redis, state_prefix: str, result: SweepResult, seconds: float = 0.0
) -> None:
    KEYS_SCANNED.inc(result.scanned)
    KEYS_INVALIDATED.inc(result.deleted)
    KEYS_UNPARSEABLE.inc(result.unparseable)
    LEASES_REVOKED.inc(result.leases_revoked)
    SWEEP_REPEATS.inc(result.repeats)
    SWEEP_SECONDS.observe(seconds)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(stats_key(state_prefix), "sweeps", 1)
    pipe.hincrby(stats_key(state_prefix), "keys_deleted", result.deleted)
    pipe.hincrby(stats_key(state_prefix), "keys_unparseable", result.unparseable)
    pipe.hincrby(stats_key(state_prefix), "leases_revoked", result.leases_revoked)
    if result.repeats:
        pipe.hincrby(stats_key(state_prefix), "sweep_repeats", result.repeats)
    pipe.execute()


def record_refresh(client: redis.Redis, state_prefix: str, refreshed: int, refused: int) -> None:
    """A refresh's totals (its Prometheus counters are counted by tasks.task_metrics)."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(stats_key(state_prefix), "refreshes", refreshed)
    pipe.hincrby(stats_key(state_prefix), "refreshes_refused", refused)
    pipe.execute()


def record_end_to_end(first_commit: float, now: float | None = None) -> None:
    """One batch finished: observe now minus its first commit (skipped for batches that carry
    no commit time: operator batches, flushes)."""
    if first_commit > 0:
        END_TO_END_SECONDS.observe(max(0.0, (now or time.time()) - first_commit))


# ---- serving (the Celery main process) ---------------------------------------------------------


class ReadableFilesCollector(multiprocess.MultiProcessCollector):
    """The multiprocess collector, minus the files that hold nothing yet. A process creates
    its file and sizes it only afterwards: a scrape in between, or a child SIGKILLed in
    between (its empty file then stays), would fail the whole scrape, every metric of every
    process with it (prometheus/client_python#1199)."""

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            try:
                if os.path.getsize(path) > 0:
                    files.append(path)
            except OSError:  # removed since the glob (a dead child's live gauges)
                continue
        return self.merge(files, accumulate=True)


def serving_registry() -> CollectorRegistry:
    """What the endpoint serves: every process's files in multiprocess mode, else this
    process's own registry (a worker with the solo pool, say)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        ReadableFilesCollector(registry)
        return registry
    return REGISTRY


def serve(port: int, redis_url: str, addr: str = "127.0.0.1") -> None:
    """Serve /metrics and /healthz; healthy while the cache Redis answers PING (a worker that
    cannot reach it can invalidate nothing)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    def problem() -> str | None:
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"the cache Redis does not answer: {exc}"
        return None

    metrics_http.serve(port, serving_registry(), problem, addr)


def mark_process_dead(pid: int) -> None:
    """A pool child ended: drop its live-gauge files (counters and histograms stay counted)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def record_replica_followup(client: redis.Redis, state_prefix: str) -> None:
    """A batch swept before a read replica had applied it: it gets follow-up passes."""
    client.hincrby(stats_key(state_prefix), "replica_followups", 1)


def record_replica_followup_sweep(client: redis.Redis, state_prefix: str) -> None:
    """A follow-up pass swept again because a late replica caught up."""
    REPLICA_FOLLOWUPS.inc()
    client.hincrby(stats_key(state_prefix), "replica_followup_sweeps", 1)
