"""The listener's Prometheus metrics and health, served on PRIMER_METRICS_PORT
(`listener.metrics_port`) when it is set: `/metrics` and `/healthz`.

Its own registry, not prometheus-client's global one: nothing registered globally by a
library or a test in the same process shows up here.

Lag is now minus the binlog commit time of the last transaction the listener has taken from
the stream, and 0 once it is caught up: the reader's queue is empty and no transaction waits
to be published (the reader blocks on the socket only when the server has nothing more to
send). MariaDB's binlog timestamps are whole seconds (the statement's start), so a fresh
event already reads up to 1 s old.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.observability import metrics_http
from core.flush_reason import LISTENER_FLUSHES

REGISTRY = CollectorRegistry(auto_describe=True)

IS_LEADER = Gauge(
    "primer_cache_listener_is_leader",
    "1 while this replica holds the leader lock",
    registry=REGISTRY,
)
LAG = Gauge(
    "primer_cache_listener_lag_seconds",
    "Now minus the binlog commit time (whole seconds on MariaDB) of the last transaction "
    "taken from the stream; 0 when caught up or standing by",
    registry=REGISTRY,
)
CHECKPOINT_AGE = Gauge(
    "primer_cache_listener_checkpoint_age_seconds",
    "Seconds since the checkpoint last moved while batches are outstanding or the stream is "
    "behind; 0 while it is current (caught up, every batch done) or standing by",
    registry=REGISTRY,
)
LAST_EVENT = Gauge(
    "primer_cache_listener_last_event_timestamp_seconds",
    "Binlog timestamp of the last transaction checkpointed",
    registry=REGISTRY,
)
EVENTS = Counter(
    "primer_cache_listener_events_total",
    "Row events of the watched tables read, by table and operation (insert, update, delete)",
    ["table", "operation"],
    registry=REGISTRY,
)
EVENTS_IGNORED = Counter(
    "primer_cache_listener_events_ignored_total",
    "Row events that change nothing a response shows (e.g. access-count bumps), or rows "
    "outside realm GLOBAL",
    registry=REGISTRY,
)
TRANSACTIONS = Counter(
    "primer_cache_listener_transactions_total", "Transactions read", registry=REGISTRY
)
BATCHES = Counter(
    "primer_cache_listener_batches_published_total",
    "Invalidation batches published",
    registry=REGISTRY,
)
BATCH_TRANSACTIONS = Histogram(
    "primer_cache_listener_batch_transactions",
    "Transactions per published batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
    registry=REGISTRY,
)
REDELIVERIES = Counter(
    "primer_cache_listener_redeliveries_total",
    "Batches published again after listener.redeliver_after_s without progress",
    registry=REGISTRY,
)
FALLBACK_FLUSHES = Counter(
    "primer_cache_listener_fallback_flushes_total",
    "Flushes of every primer key the listener asked for, by reason",
    ["reason"],
    registry=REGISTRY,
)
DECODER_FALLBACKS = Counter(
    "primer_cache_listener_decoder_fallbacks_total",
    "Row events decoded by the library because the fast decoder does not cover their shape",
    registry=REGISTRY,
)
UNDECODABLE_EVENTS = Counter(
    "primer_cache_listener_undecodable_events_total",
    "Binlog events neither the row decoder nor python-mysql-replication could read: each one "
    "flushed every primer key and was stepped past (primer-cache status stays unhealthy "
    "until primer-cache ack-undecodable)",
    registry=REGISTRY,
)
RESTARTS = Counter(
    "primer_cache_listener_restarts_total", "Stream restarts after a fault", registry=REGISTRY
)
FAST_LANE_DELETED = Counter(
    "primer_cache_listener_fast_lane_deleted_total",
    "Cache keys the fast lane deleted as soon as their change was read (known names only; "
    "the sweeps find the rest)",
    registry=REGISTRY,
)
FAST_LANE_KNOWN = Gauge(
    "primer_cache_listener_fast_lane_known_keys",
    "Key names the fast lane knows from its last scans; 0 when off or above "
    "listener.fast_lane_max_keys",
    registry=REGISTRY,
)
FAST_LANE_ERRORS = Counter(
    "primer_cache_listener_fast_lane_errors_total",
    "Fast-lane deletes or scans that failed (the sweeps still delete every affected key)",
    registry=REGISTRY,
)

# Exported from the start, so alerts see a 0 before the first flush.
for _reason in LISTENER_FLUSHES:
    FALLBACK_FLUSHES.labels(_reason)


def operation(before: object, after: object) -> str:
    """A row event's operation from which images it has."""
    if before is None:
        return "insert"
    return "delete" if after is None else "update"


class RowCounts:
    """Row events by (table, operation), counted in the reader thread and handed to the
    Prometheus counters once per transaction (a dict increment per row is cheaper than a
    labelled counter's lock)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], int] = {}
        self.ignored = 0
        self._children: dict[tuple[str, str], Counter] = {}

    def add(self, table: str, op: str, visible: bool) -> None:
        self.rows[(table, op)] = self.rows.get((table, op), 0) + 1
        if not visible:
            self.ignored += 1

    def flush(self) -> None:
        for labels, count in self.rows.items():
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = EVENTS.labels(*labels)
            child.inc(count)
        if self.ignored:
            EVENTS_IGNORED.inc(self.ignored)
        self.rows.clear()
        self.ignored = 0


class Freshness:
    """What lag, checkpoint age and /healthz are computed from, at scrape time: a stalled
    listener shows a growing lag instead of the last value it set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.leading = False
        self.caught_up = True
        self.outstanding = False  # published batches not done yet (the listener's ledger)
        self.last_commit = 0.0  # epoch s of the last transaction taken from the stream
        self.checkpoint_saved = 0.0  # epoch s of this leader's last checkpoint write
        self.ticked = time.monotonic()  # the loop's last turn (leading or standing by)

    def lead(self, leading: bool, last_commit: float = 0.0) -> None:
        with self._lock:
            self.leading = leading
            self.caught_up = False
            self.last_commit = last_commit or time.time()
        IS_LEADER.set(1 if leading else 0)

    def took(self, commit_time: float) -> None:
        """A transaction committed at `commit_time` was taken from the stream."""
        self.caught_up = False
        if commit_time:
            self.last_commit = commit_time

    def idle(self) -> None:
        """Nothing is readable and nothing waits to be published."""
        self.caught_up = True

    def checkpointed(self, event_time: float) -> None:
        self.checkpoint_saved = time.time()
        if event_time:
            LAST_EVENT.set(event_time)

    def tick(self) -> None:
        self.ticked = time.monotonic()

    def lag(self) -> float:
        if not self.leading or self.caught_up:
            return 0.0
        return max(0.0, time.time() - self.last_commit)

    def checkpoint_age(self) -> float:
        if not self.leading or not self.checkpoint_saved:
            return 0.0
        if self.caught_up and not self.outstanding:
            return 0.0  # the checkpoint is where the stream is: current, however old
        return max(0.0, time.time() - self.checkpoint_saved)

    def problem(self, max_lag_s: float, stall_s: float) -> str | None:
        """Why the listener is unhealthy, or None: its loop has not turned for `stall_s`
        (stuck, or reconnecting), or, leading, its lag is above `max_lag_s`."""
        still = time.monotonic() - self.ticked
        if still > stall_s:
            return f"the listener loop has not turned for {still:.0f} s (limit {stall_s:.0f} s)"
        lag = self.lag()
        if lag > max_lag_s:
            return f"binlog lag {lag:.1f} s is above {max_lag_s:g} s"
        return None


FRESHNESS = Freshness()
LAG.set_function(FRESHNESS.lag)
CHECKPOINT_AGE.set_function(FRESHNESS.checkpoint_age)


def serve(port: int, max_lag_s: float, stall_s: float, addr: str = "127.0.0.1") -> None:
    """Serve /metrics and /healthz on addr:`port` (port 0: not at all). Healthy: the loop
    turned within `stall_s` and, while leading, the lag is at most `max_lag_s`; a standby
    that waits for the lock is healthy."""
    if port:
        metrics_http.serve(port, REGISTRY, lambda: FRESHNESS.problem(max_lag_s, stall_s), addr)
