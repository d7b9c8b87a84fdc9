"""How the server's reads meet the cache: four read paths behind one small interface.

- `none`: every read runs the primer query.
- `seed`: the seed document's plan as written, the BASELINE the benchmark measures against:
  an L1 LRU per process (1,000 responses, TTL 300 s) over Redis GET/SET (TTL 3600 s, the
  sidecar's key and value format), with no leases and no invalidation of the L1. It is stale
  by design once the data changes; never run it in production.
- `primer-cache`: the primer-cache client library (exact L1, leases, single flight).
- `ceiling`: each answer loaded once and kept in memory for ever (benchmark only: the cost of
  the server and HTTP alone, never invalidated).

Each `get(query, loader)` returns the structured response; `stats()` gives the counts the
benchmark reads: l1_hits, l1_misses, redis_hits, redis_misses, loader_calls (and more, per
cache).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from primer_cache_client import AsyncPrimerCache, PrimerQuery

from config import Settings
from config.query import ALL_LEVELS, Query
from core import response as response_format
from core.keys import KeyFormat

Loader = Callable[[Query], Awaitable[dict]]
CACHE_MODES = ("none", "seed", "primer-cache", "ceiling")


class ResponseCache(Protocol):
    name: str

    async def get(self, query: Query, loader: Loader) -> dict: ...

    def stats(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class NoCache:
    name = "none"

    def __init__(self) -> None:
        self.loader_calls = 0

    async def get(self, query: Query, loader: Loader) -> dict:
        self.loader_calls += 1
        return await loader(query)

    def stats(self) -> dict[str, Any]:
        return {"loader_calls": self.loader_calls}

    async def aclose(self) -> None:
        return None


class CeilingCache:
    """Benchmark only: the first answer per query, in memory, never invalidated."""

    name = "ceiling"

    def __init__(self) -> None:
        self._kept: dict[Query, dict] = {}
        self.hits = 0
        self.loader_calls = 0

    async def get(self, query: Query, loader: Loader) -> dict:
        kept = self._kept.get(query)
        if kept is not None:
            self.hits += 1
            return kept
        self.loader_calls += 1
        kept = self._kept[query] = await loader(query)
        return kept

    def stats(self) -> dict[str, Any]:
        return {
            "l1_hits": self.hits,
            "l1_misses": self.loader_calls,
            "loader_calls": self.loader_calls,
        }

    async def aclose(self) -> None:
        return None


class SeedPlanCache:
    """The seed's plan as written (BASELINE: no leases, no invalidation; see module doc)."""

    name = "seed"

    def __init__(
        self,
        settings: Settings,
        l1_size: int = 1000,
        l1_ttl_s: float = 300.0,
        ttl_s: int = 3600,
    ) -> None:
        self.keys = KeyFormat(settings.cache.key_prefix, settings.cache.key_template)
        self.compression = settings.cache.compression
        self.redis = aioredis.Redis.from_url(settings.cache.url, socket_timeout=2.0)
        self.l1: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self.l1_size = l1_size
        self.l1_ttl_s = l1_ttl_s
        self.ttl_s = ttl_s
        self.counts = dict.fromkeys(
            ("l1_hits", "l1_misses", "redis_hits", "redis_misses", "loader_calls", "faults"), 0
        )

    async def get(self, query: Query, loader: Loader) -> dict:
        key = self.keys.build(query)
        now = time.monotonic()
        entry = self.l1.get(key)
        if entry is not None and entry[0] > now:
            self.l1.move_to_end(key)
            self.counts["l1_hits"] += 1
            return entry[1]
        self.counts["l1_misses"] += 1
        value = await self._redis_get(key)
        if value is None:
            self.counts["loader_calls"] += 1
            value = await loader(query)
            await self._redis_set(key, value)
        self._store(key, value, now)
        return value

    async def _redis_get(self, key: str) -> dict | None:
        try:
            raw = await self.redis.get(key)
        except (TimeoutError, aioredis.RedisError, OSError):
            self.counts["faults"] += 1
            return None
        if raw is None:
            self.counts["redis_misses"] += 1
            return None
        try:
            value = response_format.decode(raw)
        except ValueError:
            self.counts["redis_misses"] += 1
            return None
        self.counts["redis_hits"] += 1
        return value

    async def _redis_set(self, key: str, value: dict) -> None:
        try:
            raw = response_format.encode(value, compression=self.compression)
            await self.redis.set(key, raw, ex=self.ttl_s)
        except (TimeoutError, aioredis.RedisError, OSError):
            self.counts["faults"] += 1

    def _store(self, key: str, value: dict, now: float) -> None:
        self.l1[key] = (now + self.l1_ttl_s, value)
        self.l1.move_to_end(key)
        while len(self.l1) > self.l1_size:
            self.l1.popitem(last=False)

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)

    async def aclose(self) -> None:
        await self.redis.aclose()


class ClientCache:
    """The primer-cache client library (primer_cache_client.AsyncPrimerCache)."""

    name = "primer-cache"

    def __init__(self, settings: Settings, **options: Any) -> None:
        # The sidecar's settings, so that both sides build the same keys and values.
        self.client = AsyncPrimerCache(
            url=settings.cache.url,
            prefix=settings.cache.key_prefix,
            key_template=settings.cache.key_template,
            compression=settings.cache.compression,
            ttl_s=settings.cache.ttl_seconds,
            **options,
        )

    async def get(self, query: Query, loader: Loader) -> dict:
        level = query.enforcement_level
        primer_query = PrimerQuery(
            include_categories=tuple(query.categories),
            priority_threshold=query.priority_threshold,
            enforcement_level=None if level == ALL_LEVELS else level,
            sort_by=query.sort_by,
            limit=query.limit,
        )

        async def load(_: Any) -> dict:
            return await loader(query)

        return await self.client.get(primer_query, load)

    def stats(self) -> dict[str, Any]:
        stats = self.client.stats()
        return {
            "l1_hits": stats["l1"]["hits"],
            "l1_misses": stats["l1"]["misses"],
            "redis_hits": stats["redis"]["hits"],
            "redis_misses": stats["redis"]["misses"],
            "loader_calls": stats["loader_calls"],
            "client": stats,
        }

    async def aclose(self) -> None:
        await self.client.aclose()


def make_cache(mode: str, settings: Settings) -> ResponseCache:
    if mode == "none":
        return NoCache()
    if mode == "ceiling":
        return CeilingCache()
    if mode == "seed":
        return SeedPlanCache(settings, ttl_s=settings.cache.ttl_seconds)
    if mode == "primer-cache":
        return ClientCache(settings)
    raise ValueError(f"cache mode {mode!r} is not one of {', '.join(CACHE_MODES)}")
