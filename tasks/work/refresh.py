"""Refresh, not miss: recompute the recently read keys an invalidation deleted.

The sweep reads each deleted key's OBJECT IDLETIME (OBJECT FREQ under an LFU policy) in the
pipeline that UNLINKs it (adapters.redis.unlink.Heat); the hottest of those, up to the per-batch
budget, go to the `refresh` task. It groups them by filter (keys that differ only in sort or
limit share one), runs one SELECT per group with the largest limit, and writes each key's
response through the lease guard (a lease taken before the SELECT, the value written by
primer_cache_fill), so a refresh that read before a later commit is refused like any fill.
The sweep already took a lease on each hot key it deleted (adapters.redis.unlink.HOLD_MS), so
readers wait (`busy`) for the refresh rather than each missing; the hot keys beyond the budget
are released at once.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Set
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from adapters.broker import REFRESH_TASK, WARM
from adapters.mysql.primer_query import fetch_rows
from adapters.redis import leases
from adapters.redis.unlink import Heat, heat_of, lfu_policy
from config.query import Query
from core.response import build_response, encode
from tasks.work import metrics
from tasks.work.runtime import Runtime
from tasks.work.sweep import SweepResult

log = logging.getLogger(__name__)

# A refresh slower than this is refused (the next read fills instead). It also bounds how long
# readers are told `busy` if the worker dies mid-refresh: they read the database meanwhile.
LEASE_MS = 10_000


def heat_probe(rt: Runtime) -> Heat | None:
    """The probe for this Redis's eviction policy; None when refresh is off."""
    if rt.settings.refresh.max_keys <= 0:
        return None
    return heat_of(rt.settings, _lfu(rt))


# The eviction policy, looked up at most this often per cache Redis: not a CONFIG GET on
# every batch's hot path.
_POLICY_TTL_S = 60.0
_policies: dict[str, tuple[float, bool]] = {}


def _lfu(rt: Runtime) -> bool:
    url, now = rt.settings.cache.url, time.monotonic()
    cached = _policies.get(url)
    if cached is not None and now - cached[0] < _POLICY_TTL_S:
        return cached[1]
    lfu = lfu_policy(rt.redis)
    _policies[url] = (now, lfu)
    return lfu


def hottest(result: SweepResult, heat: Heat, budget: int, skip: set[str]) -> list[str]:
    """Up to `budget` of the sweep's hot keys, hottest first (least idle, or most frequent)."""
    sign = -1 if heat.command == "FREQ" else 1
    best: dict[str, int] = {}  # a key deleted ahead of the sweep may be found by it again
    for key, answer in result.hot:
        if key not in skip:
            best[key] = min(best.get(key, sign * answer), sign * answer)
    ranked = sorted((rank, key) for key, rank in best.items())
    return [key for _, key in ranked[:budget]]


def schedule(
    rt: Runtime, keys: list[str], held: dict[str, str], *, warmed: Set[str] = frozenset()
) -> None:
    """Queue the refresh of `keys`, and release the leases the sweep took (`held`) on the hot
    keys neither it nor a warm (`warmed`) will fill, so that their readers fill them at once."""
    filled = set(keys) | warmed
    spare = {key: token for key, token in held.items() if key not in filled}
    held_keys = {key: held[key] for key in keys if key in held}
    if keys:
        try:
            rt.send(REFRESH_TASK, [keys, held_keys], WARM)
        except BrokerError as exc:  # the keys are deleted (correct); only their warmth is lost
            log.error("could not enqueue the refresh of %d keys: %s", len(keys), exc)
            spare = {key: token for key, token in held.items() if key not in warmed}
    leases.release(rt.redis, spare)


@dataclass
class RefreshResult:
    refreshed: int = 0
    refused: int = 0
    skipped: int = 0
    selects: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "refreshed": self.refreshed,
            "refused": self.refused,
            "skipped": self.skipped,
            "selects": self.selects,
        }


def refresh_keys(
    rt: Runtime, keys: list[str], held: Mapping[str, str] | None = None
) -> RefreshResult:
    """Recompute `keys` (cache key names) through the lease guard, one SELECT per filter.
    `held`: the leases the sweep took on them; those of keys that cannot be recomputed are
    released (the rest are taken over by the refresh's own)."""
    result = RefreshResult()
    groups: dict[Query, list[tuple[str, Query]]] = defaultdict(list)
    underscored = any("_" in key for key in keys) and _underscored_categories(rt)
    skipped: dict[str, str] = {}
    for key in keys:
        query = _query_of(rt, key, underscored)
        if query is None:
            result.skipped += 1
            if held and key in held:
                skipped[key] = held[key]
            continue
        groups[replace(query, limit=1)].append((key, query))
    leases.release(rt.redis, skipped)
    for members in groups.values():
        _refresh_group(rt, members, result)
    log.info(
        "refreshed %d keys with %d SELECTs (%d refused, %d skipped)",
        result.refreshed,
        result.selects,
        result.refused,
        result.skipped,
    )
    return result


def _query_of(rt: Runtime, key: str, underscored: bool) -> Query | None:
    """The query that builds exactly `key`, or None (not ours, non-canonical text, or
    ambiguous: the key's category text holds `_` and some category does too)."""
    parsed = rt.keys.parse(key)
    if parsed is None or (underscored and "_" in parsed.filter.cats):
        return None
    query = parsed.query()
    if query.problems() or rt.keys.build(query) != key:
        return None
    return query


def _underscored_categories(rt: Runtime) -> bool:
    with rt.db().cursor() as cur:
        cur.execute(
            f"SELECT 1 FROM `{rt.settings.tables.chunks}` WHERE element_category LIKE %s LIMIT 1",
            ("%\\_%",),
        )
        return cur.fetchone() is not None


def _refresh_group(rt: Runtime, members: list[tuple[str, Query]], result: RefreshResult) -> None:
    client = rt.redis
    held = leases.hold(client, [key for key, _ in members], LEASE_MS)
    tokens = [(key, query, held.get(key)) for key, query in members]
    widest = max(query.limit for _, query, _ in tokens)
    rows = fetch_rows(rt.db(), rt.settings, replace(members[0][1], limit=widest))
    result.selects += 1
    now = datetime.now(UTC)
    for key, query, token in tokens:
        if token is None:
            result.skipped += 1
            continue
        value = encode(
            build_response(query, rows[: query.limit], now),
            compression=rt.settings.cache.compression,
        )
        if leases.fill(client, key, token, value, rt.settings.cache.ttl_seconds):
            result.refreshed += 1
        else:
            result.refused += 1
            log.info("refresh of %s refused: its lease was revoked meanwhile", key)


def refresh_and_record(
    rt: Runtime, keys: list[str], held: Mapping[str, str] | None = None
) -> RefreshResult:
    """`refresh_keys`, added to the totals `primer-cache status` shows."""
    result = refresh_keys(rt, keys, held)
    metrics.record_refresh(
        rt.redis, rt.settings.cache.state_prefix, result.refreshed, result.refused
    )
    return result
