"""AsyncPrimerCache's L1 kept exact by the same tracking, a cancelled first reader not failing
the tasks waiting on it, and the metrics: stats() and prometheus-client's exposition."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
from primer_cache_client import AsyncPrimerCache, PrimerCache, PrimerQuery
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.redis import leases
from tests.client_fixtures import Database, cleaned, fresh_prefix, version_of

QUERY = PrimerQuery(include_categories=("development",), priority_threshold=0.8)


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = fresh_prefix()
    leases.load_library(redis_client)
    with cleaned(redis_client, prefix):
        yield prefix


async def _until(condition: object, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.005)


def test_async_l1_is_invalidated_by_the_sidecars_delete(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    db = Database()
    key = QUERY.key(prefix)

    async def main() -> None:
        async with AsyncPrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
            assert cache.tracking.wait_established(10)
            l1 = cache._path.l1

            async def held() -> bool:
                await cache.get(QUERY, db.aload)
                return l1.get(key) is not None

            deadline = asyncio.get_running_loop().time() + 10
            while not await held():
                assert asyncio.get_running_loop().time() < deadline, "never entered the L1"
            db.version = 2
            leases.invalidate(redis_client, [[key.encode()]], "IDLETIME", 0, 1)
            await _until(lambda: l1.get(key) is None, "the L1 copy to go")
            assert version_of(await cache.get(QUERY, db.aload)) == 2

    asyncio.run(main())


def test_a_cancelled_first_reader_does_not_fail_the_waiting_tasks(
    services: dict[str, str], prefix: str
) -> None:
    db = Database()

    async def main() -> list[dict]:
        started = asyncio.Event()
        release = asyncio.Event()

        async def slow(query: PrimerQuery) -> dict:
            started.set()
            await release.wait()
            return db.load(query)

        async with AsyncPrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
            first = asyncio.create_task(cache.get(QUERY, slow))
            await started.wait()
            waiters = [asyncio.create_task(cache.get(QUERY, slow)) for _ in range(5)]
            await _until(lambda: cache.stats()["single_flight_waits"] >= 5, "waiters")
            first.cancel()
            await _until(lambda: cache.stats()["single_flight_waits"] >= 6, "a new reader")
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await first
            return await asyncio.gather(*waiters)

    results = asyncio.run(main())
    assert [version_of(r) for r in results] == [1] * 5


def test_stats_and_prometheus_exposition(services: dict[str, str], prefix: str) -> None:
    db = Database()
    with (
        PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as one,
        PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as two,
    ):
        assert one.tracking.wait_established(10) and two.tracking.wait_established(10)
        one.get(QUERY, db.load)  # lease, load, fill
        two.get(QUERY, db.load)  # a Redis hit
        stats = one.stats()
        assert stats["loader_calls"] == 1 and stats["fills"] == 1
        assert stats["redis"]["misses"] == 1 and stats["l1"]["hit_rate"] == 0.0
        assert two.stats()["redis"]["hits"] == 1 and two.stats()["redis"]["hit_rate"] == 1.0
        families = {f.name: f for f in text_string_to_metric_families(generate_latest().decode())}
        requests = {
            (s.labels["tier"], s.labels["outcome"]): s.value
            for s in families["primer_cache_client_requests"].samples
        }
        # summed over the process's live caches (other tests' caches may still be alive)
        assert requests[("redis", "hits")] >= 1 and requests[("redis", "misses")] >= 1
        assert families["primer_cache_client_loader_calls"].samples[0].value >= 1
        assert families["primer_cache_client_fills"].samples[0].value >= 1
        histogram = families["primer_cache_client_read_seconds"]
        count = [s for s in histogram.samples if s.name.endswith("_count")]
        assert count and count[0].value >= 2
