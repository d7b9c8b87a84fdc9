"""What the sync and asyncio caches share: settings, L1, tracking, counters, fault rules."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import RedisCluster

from primer_cache_client import stats as stats_mod
from primer_cache_client.functions import LIBRARY
from primer_cache_client.l1 import L1
from primer_cache_client.options import Options, is_cluster, sync_client
from primer_cache_client.query import PrimerQuery
from primer_cache_client.tracking import Tracker, connection_factory

log = logging.getLogger("primer_cache_client")

# What a cache fault is: the server unreachable, slow, refusing (OOM, ACL, no function), or a
# reply of the wrong shape. Never raised to the caller.
FAULTS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, ValueError)


# Caches alive in this process: a forked child gets none of their threads (the tracking
# connections' readers), so each is reset there (see ReadPath.after_fork).
_live: weakref.WeakSet[ReadPath] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for path in list(_live):
        path.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ReadPath:
    """State of one cache: its options, L1, tracker and counters (no Redis calls on reads)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.counters = stats_mod.Counters()
        self.l1 = L1(options.l1_size, options.l1_ttl_s)
        self._down_until = 0.0
        self._closed = False
        self._cluster: bool | None = None
        self._topology: redis.Redis | None = None  # the tracker's own client (its thread only)
        self._tracker: Tracker | None = None
        self._tracker_lock = threading.Lock()
        self._warned: set[str] = set()
        self._fork_hooks: list[Callable[[], None]] = []
        _live.add(self)

    def on_fork(self, hook: Callable[[], None]) -> None:
        """Run `hook` in a forked child (the cache resets its own locks and in-flight reads)."""
        self._fork_hooks.append(hook)

    def after_fork(self) -> None:
        """In a forked child: the parent's tracking threads did not come along, so the L1
        copied from the parent can no longer be kept exact. Empty and distrust it (its lock
        may have been held by a parent thread at the fork), and track again."""
        self.l1.reset_lock()
        self.l1.distrust()
        self._tracker = None
        self._tracker_lock = threading.Lock()
        self._topology = None  # its pool belongs to the parent
        self.counters.reset_lock()
        for hook in self._fork_hooks:
            hook()
        if not self._closed:
            self.start_tracking()

    # ---- query and key -------------------------------------------------------------------
    def key_of(self, query: PrimerQuery) -> str:
        if not isinstance(query, PrimerQuery):
            raise ValueError(f"query: expected a PrimerQuery, got {type(query).__name__}")
        return query.key(self.options.prefix, self.options.key_template)

    # ---- topology ------------------------------------------------------------------------
    def cluster(self) -> bool:
        """Whether the Redis is a cluster (asked once, when first reachable)."""
        if self._cluster is None:
            self._cluster = is_cluster(self.options.url, self.options)
        return self._cluster

    def start_tracking(self) -> None:
        if not self.options.l1 or self._tracker is not None:
            return
        with self._tracker_lock:
            if self._tracker is None and not self._closed:
                self._tracker = Tracker(
                    self.l1,
                    self.options.prefix,
                    self._list_nodes,
                    cluster=lambda: bool(self._cluster),
                    ping_interval_s=self.options.ping_interval_s,
                )

    def _list_nodes(self) -> list[tuple[str, Callable[[], redis.Connection]]]:
        cluster = self.cluster()
        if self._topology is None:
            self._topology = sync_client(self.options, cluster)
        client = self._topology
        if not isinstance(client, RedisCluster):
            pool = client.connection_pool
            where = pool.connection_kwargs
            return [(f"{where.get('host')}:{where.get('port')}", connection_factory(pool))]
        client.nodes_manager.initialize()  # the primaries now, not as last seen
        return [
            (node.name, connection_factory(client.get_redis_connection(node).connection_pool))
            for node in client.get_primaries()
        ]

    @property
    def tracker(self) -> Tracker | None:
        return self._tracker

    # ---- faults --------------------------------------------------------------------------
    def redis_skipped(self) -> bool:
        """True while a recent connection fault says Redis is away (reads go to the loader
        without waiting for another timeout)."""
        return time.monotonic() < self._down_until

    def fault(self, exc: BaseException, where: str) -> None:
        self.counters.add("cache_faults")
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
            self._down_until = time.monotonic() + self.options.fault_backoff_s
        kind = f"{where}:{type(exc).__name__}"
        if kind not in self._warned:  # one line per kind of fault, not one per read
            self._warned.add(kind)
            log.warning("primer cache: %s failed (%s); serving from the loader", where, exc)

    @staticmethod
    def function_missing(exc: BaseException) -> bool:
        return isinstance(exc, redis.ResponseError) and "Function not found" in str(exc)

    library = LIBRARY

    # ---- stats ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        c = self.counters
        with c._lock:
            values = dict(c.values)
            loader_seconds = c.loader_seconds
        l1 = self.l1
        tracker = self._tracker
        l1_misses = l1.misses + l1.bypassed
        return {
            "l1": {
                "hits": l1.hits,
                "misses": l1_misses,
                "invalidations": l1.invalidations,
                "hit_rate": stats_mod.hit_rate(l1.hits, l1_misses),
                "bypassed": l1.bypassed,
                "refused_stores": l1.refused_stores,
                "evictions": l1.evictions,
                "flushes": l1.flushes,
                "size": len(l1),
            },
            "redis": {
                "hits": values["redis_hits"],
                "misses": values["redis_misses"],
                "invalidations": tracker.invalidation_messages if tracker else 0,
                "hit_rate": stats_mod.hit_rate(values["redis_hits"], values["redis_misses"]),
            },
            "tracking": {
                "established": l1.trusted,
                "drops": tracker.drops if tracker else 0,
            },
            **values,
            "loader_seconds": loader_seconds,
        }

    def latency(self) -> tuple[list[int], float]:
        """The read-latency histogram. L1 hits are not timed (two clock reads would cost
        as much as the hit): they are counted in the lowest bucket, adding nothing to the sum."""
        c = self.counters
        with c._lock:
            counts = list(c.latency_counts)
            total = c.latency_sum
        counts[0] += self.l1.hits
        return counts, total

    def close(self) -> None:
        self._closed = True
        if self._tracker is not None:
            self._tracker.close()
        if self._topology is not None:
            self._topology.close()
