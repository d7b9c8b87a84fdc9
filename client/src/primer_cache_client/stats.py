"""Counters of one cache, readable as `stats()` and exported through prometheus-client when it
is installed (the `metrics` extra): the seed's CacheMetrics (hits, misses, invalidations, hit
rate) per tier, loader calls and time, fills, refused fills, busy waits, cache faults, and a
read-latency histogram.

The hot path only adds to plain integers (a prometheus metric per event would cost more than
an L1 hit); a collector reads them at scrape time.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
)  # fmt: skip

COUNTERS = (
    "redis_hits",
    "redis_misses",
    "loader_calls",
    "fills",
    "refused_fills",
    "busy_waits",
    "busy_timeouts",
    "cache_faults",
    "undecodable_values",
    "single_flight_waits",
)


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = dict.fromkeys(COUNTERS, 0)
        self.loader_seconds = 0.0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum = 0.0

    def reset_lock(self) -> None:
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n

    def loader(self, seconds: float) -> None:
        with self._lock:
            self.values["loader_calls"] += 1
            self.loader_seconds += seconds

    def latency(self, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        with self._lock:
            self.latency_counts[index] += 1
            self.latency_sum += seconds


def hit_rate(hits: int, misses: int) -> float:
    total = hits + misses
    return hits / total if total else 0.0


# ---- prometheus-client export (optional) -------------------------------------------------
_sources: weakref.WeakSet[Any] = weakref.WeakSet()
_registered = False
_register_lock = threading.Lock()


def export(cache: Any) -> None:
    """Add `cache` (anything with stats() and latency()) to the process's prometheus
    collector, registering it on first use; nothing when prometheus-client is absent."""
    global _registered
    try:
        from prometheus_client.core import REGISTRY
    except ImportError:
        return
    _sources.add(cache)
    with _register_lock:
        if not _registered:
            REGISTRY.register(_Collector(lambda: list(_sources)))
            _registered = True


class _Collector:
    def __init__(self, sources: Callable[[], list[Any]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        caches = self._sources()
        snapshots = [cache.stats() for cache in caches]
        tiers = CounterMetricFamily(
            "primer_cache_client_requests", "Reads by tier and outcome", labels=["tier", "outcome"]
        )
        for tier in ("l1", "redis"):
            for outcome in ("hits", "misses", "invalidations"):
                total = sum(s[tier][outcome] for s in snapshots)
                tiers.add_metric([tier, outcome], total)
        yield tiers
        rates = GaugeMetricFamily(
            "primer_cache_client_hit_rate", "Hit rate by tier", labels=["tier"]
        )
        for tier in ("l1", "redis"):
            hits = sum(s[tier]["hits"] for s in snapshots)
            misses = sum(s[tier]["misses"] for s in snapshots)
            rates.add_metric([tier], hit_rate(hits, misses))
        yield rates
        for name in COUNTERS:
            if name in ("redis_hits", "redis_misses"):
                continue
            yield CounterMetricFamily(
                f"primer_cache_client_{name}",
                name.replace("_", " "),
                value=sum(s[name] for s in snapshots),
            )
        yield CounterMetricFamily(
            "primer_cache_client_loader_seconds",
            "Time spent in the loader",
            value=sum(s["loader_seconds"] for s in snapshots),
        )
        yield GaugeMetricFamily(
            "primer_cache_client_tracking_established",
            "1 while every invalidation channel is up (the L1 is trusted)",
            value=min((1 if s["tracking"]["established"] else 0 for s in snapshots), default=0),
        )
        counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        total_sum = 0.0
        for cache in caches:
            bucket_counts, seconds = cache.latency()
            counts = [a + b for a, b in zip(counts, bucket_counts, strict=True)]
            total_sum += seconds
        buckets = []
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        yield HistogramMetricFamily(
            "primer_cache_client_read_seconds",
            "Latency of PrimerCache.get",
            buckets=buckets,
            sum_value=total_sum,
        )
