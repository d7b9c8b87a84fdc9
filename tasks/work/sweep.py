"""SCAN sweeps of the primer keyspace: find keys with SCAN (never KEYS), delete with UNLINK.

One sweep walks the keyspace once with MATCH `*<head>*`, which returns the cache keys under
the key format's head and the lease keys guarding them (core.keys.classify tells them apart;
anything else it returns is left alone). It asks `doomed(filter)` of each cache key's filter
(memoised: many keys share one filter and differ in sort or limit). A doomed cache key is
deleted; a lease key whose cache key is doomed is deleted (the lease revoked), and its cache
key with it, since a fill may have landed after SCAN passed that key. Deletions go out in
pipelined UNLINK batches while the scan goes on.

With a `Heat` probe (refresh on), the deletes go through primer_cache_invalidate instead,
which reads each key's OBJECT IDLETIME (or FREQ) and, in the same atomic step as the delete,
takes the lease on the hot ones: those read recently, and those whose lease stood (a miss or
a refresh was in progress). From the moment a hot key is gone until the refresh writes it
(tasks.work.refresh), or the invalidation releases the keys it will not refresh, readers are told
`busy` and wait for the fresh value instead of each missing and reading the database.

On a Redis Cluster every primary is scanned, concurrently (one thread each: the work is
network-bound; tasks.work.cluster_sweep), and deletes are grouped by hash slot (an UNLINK of
several keys must stay in one slot). A failover during the sweep never skips keys: a node
whose scan fails, and every slot whose primary changed while the sweep ran, is scanned again
in full from the node that owns it now (a full re-scan is correct, only slower).

A fill that lands while the sweep runs, after SCAN passed its key, is caught by the marker
it leaves: its lease hash, kept for FILLED_GRACE_MS (adapters.redis.lease_library). That marker is
a key Redis may evict (under volatile-ttl it is the first victim) or let expire (a sweep
longer than its lifetime), and a sweep that misses it leaves the fill, stale, in place
(issue 22, item 4). So the sweep does not trust the marker when it may have gone: when any
primary's INFO `evicted_keys` grew while it ran, or the sweep outlived the marker, it sweeps
once more. The second sweep needs no marker: every lease older than the change was revoked
or is gone by the end of the first (a fill on a gone lease is refused), so what such a fill
wrote is a plain key present from the start of the second sweep to its end, and SCAN
returns it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.cluster import RedisCluster

from adapters.redis.connection import is_cluster
from adapters.redis.lease_library import FILLED_GRACE_MS
from adapters.redis.unlink import UNLINK_BATCH, Heat, unlink_with_leases
from core.keys import KeyFilter, KeyFormat
from tasks.work.cluster_sweep import SweepIncomplete, sweep_cluster
from tasks.work.sweep_result import UNPARSEABLE_SAMPLE, SweepResult

log = logging.getLogger(__name__)

__all__ = ["SweepIncomplete", "SweepResult", "delete_keys", "sweep"]

SCAN_COUNT = 1000
# A cluster node's doomed keys spread over its ~5,461 slots, one UNLINK per slot: collecting
# more of them per round trip puts several keys in each UNLINK.
SLOT_GROUPED_BATCH = 10_000


@dataclass
class _Doomed:
    cache: list[bytes] = field(default_factory=list)
    leases: list[bytes] = field(default_factory=list)
    scanned: bool = False  # `leases` are those SCAN found (else every cache key's is revoked)

    def __len__(self) -> int:
        return len(self.cache) + len(self.leases)


def sweep(
    client: redis.Redis,
    keys: KeyFormat,
    doomed: Callable[[KeyFilter], bool],
    *,
    dry_run: bool = False,
    count: int = SCAN_COUNT,
    heat: Heat | None = None,
    seen: list[bytes] | None = None,
) -> SweepResult:
    """Delete every key under `keys` for which `doomed(filter)` holds, and every key under the
    prefix that does not parse (safe side: it may hold anything), revoking the leases on all
    of them (present or not). Dry runs only list the cache keys and count the leases.
    `seen` gets every cache key the sweep finds appended (tasks.work.known_keys)."""

    by_slot = is_cluster(client)

    def sweep_once(seen: list[bytes] | None) -> SweepResult:
        def sweep_node(node: redis.Redis) -> SweepResult:
            return _sweep_node(node, by_slot, keys, doomed, dry_run, count, heat, seen)

        if not by_slot:
            return sweep_node(client)
        return sweep_cluster(client, sweep_node)  # type: ignore[arg-type]

    if dry_run:
        return sweep_once(seen)
    before = eviction_counts(client)
    started = time.monotonic()
    result = sweep_once(seen)
    why = markers_may_be_gone(before, eviction_counts(client), time.monotonic() - started)
    if why:
        log.warning(
            "sweeping again: %s while the sweep ran, so the marker a fill leaves may have gone "
            "before SCAN reached it",
            why,
        )
        result.add(sweep_once(None))  # the first sweep's keys are the snapshot's
        result.repeats += 1
    return result


def eviction_counts(client: redis.Redis) -> dict[str, int | None]:
    """INFO `evicted_keys` of each primary (one entry on a single Redis); None where INFO
    answers with an error (then the sweep is repeated: safe side)."""
    if is_cluster(client):
        cluster: RedisCluster = client  # type: ignore[assignment]
        nodes = [
            (node.name, cluster.get_redis_connection(node)) for node in cluster.get_primaries()
        ]
    else:
        nodes = [("", client)]
    counts: dict[str, int | None] = {}
    for name, node in nodes:
        try:
            counts[name] = int(node.info("stats")["evicted_keys"])
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except (redis.RedisError, KeyError, ValueError):
            counts[name] = None
    return counts


def markers_may_be_gone(
    before: dict[str, int | None], after: dict[str, int | None], seconds: float
) -> str:
    """Why a marker left during a sweep may be gone by its end ("": it cannot be): a key
    evicted on a primary (or a count that cannot be read or compared, as when a failover
    put another node in), or a sweep as long as the marker lives."""
    if seconds * 1000 >= FILLED_GRACE_MS:
        return f"{seconds:.0f} s passed (a marker lives {FILLED_GRACE_MS / 1000:.0f} s)"
    if before.keys() != after.keys():
        return "the cluster's primaries changed"
    grew = sorted(
        name or "redis"
        for name, count in after.items()
        if count is None or before[name] is None or count != before[name]
    )
    if grew:
        return f"keys were evicted (or eviction counts unreadable) on {', '.join(grew)}"
    return ""


def _sweep_node(
    node: redis.Redis,
    by_slot: bool,
    keys: KeyFormat,
    doomed: Callable[[KeyFilter], bool],
    dry_run: bool,
    count: int,
    heat: Heat | None,
    seen: list[bytes] | None = None,
) -> SweepResult:
    """Scan one node and delete what it holds through the same connection: a cluster node
    owns the slots of every key it returns, so its UNLINKs need no routing (one slot each,
    `by_slot`). A node demoted or gone meanwhile answers MOVED or not at all: the sweep then
    scans its slots again from their new primary (tasks.work.cluster_sweep)."""
    result = SweepResult()
    pending = _Doomed(scanned=True)
    judge = keys.judge(doomed)  # one memo per thread
    head = keys.head
    pattern = keys.sweep_pattern()
    cursor = 0
    while True:
        cursor, batch = node.scan(cursor=cursor, match=pattern, count=count)
        for raw in batch:
            text = _text(raw)
            if text.startswith(head):  # a cache key (nearly every key: the fast path)
                result.scanned += 1
                if seen is not None:
                    seen.append(_raw(raw))
                verdict = judge(text)
                if verdict is None:
                    result.unparseable += 1
                    if len(result.unparseable_sample) < UNPARSEABLE_SAMPLE:
                        result.unparseable_sample.append(text)
                elif not verdict:
                    continue
                pending.cache.append(_raw(raw))
                continue
            kind, guarded = keys.classify(text)
            if kind != "lease" or guarded is None or judge(guarded) is False:
                continue  # another key that merely contains the head, or a spared lease
            pending.leases.append(_raw(raw))
            if not dry_run:
                pending.cache.append(guarded.encode("utf-8", "surrogateescape"))
        if len(pending) >= (SLOT_GROUPED_BATCH if by_slot else UNLINK_BATCH) or (
            cursor == 0 and pending
        ):
            _delete(node, by_slot, pending, result, dry_run, heat)
            pending = _Doomed(scanned=True)
        if cursor == 0:
            return result


def delete_keys(
    client: redis.Redis, cache_keys: list[bytes], heat: Heat | None = None
) -> SweepResult:
    """Delete the given cache keys and revoke their leases, as a sweep does with the keys it
    finds doomed (holding the hot ones, with a Heat probe)."""
    result = SweepResult()
    _delete(client, is_cluster(client), _Doomed(cache=cache_keys), result, False, heat)
    return result


def _delete(
    client: redis.Redis,
    by_slot: bool,
    doomed: _Doomed,
    result: SweepResult,
    dry_run: bool,
    heat: Heat | None,
) -> None:
    if dry_run:
        result.keys.extend(_text(raw) for raw in doomed.cache)
        result.deleted += len(doomed.cache)
        result.leases_revoked += len(doomed.leases)
        return
    done = unlink_with_leases(
        client,
        doomed.cache,
        lease_names=doomed.leases if doomed.scanned else None,
        by_slot=by_slot,
        heat=heat,
    )
    result.deleted += done.deleted
    result.leases_revoked += done.leases_revoked
    for key, answer, token in done.held:
        result.hot.append((key, answer))
        result.held[key] = token


def _raw(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")


def _text(raw: bytes | str) -> str:
    # Keys are bytes (no decode_responses, for speed); a non-UTF-8 key must still be handled.
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
