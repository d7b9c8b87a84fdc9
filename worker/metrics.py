"""The listener's Prometheus metrics, served on `listener.metrics_port` when it is set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

IS_LEADER = Gauge("primer_cache_listener_is_leader", "1 while this replica holds the leader lock")
LAST_EVENT = Gauge(
    "primer_cache_listener_last_event_timestamp_seconds",
    "Binlog timestamp of the last transaction checkpointed",
)
TRANSACTIONS = Counter("primer_cache_listener_transactions_total", "Transactions read")
BATCHES = Counter("primer_cache_listener_batches_published_total", "Invalidation batches published")
REDELIVERIES = Counter(
    "primer_cache_listener_redeliveries_total",
    "Batches published again after redeliver_after_s without progress",
)
RESTARTS = Counter("primer_cache_listener_restarts_total", "Stream restarts after a fault")


def serve(port: int) -> None:
    if port:
        start_http_server(port, addr="127.0.0.1")
