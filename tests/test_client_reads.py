"""The client's read through Redis: one load per key per process (threads and tasks), the lease
across processes (busy, poll, serve the other's fill), faults answered by the loader within the
timeout and counted, an undecodable value deleted and replaced."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from primer_cache_client import AsyncPrimerCache, PrimerCache, PrimerQuery

from adapters.redis import leases
from tests.client_fixtures import Database, cleaned, fresh_prefix, version_of
from tests.private_servers import PrivateRedis
from tests.services import free_port, wait_for

QUERY = PrimerQuery(include_categories=("security",), limit=10)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = fresh_prefix()
    leases.load_library(redis_client)
    with cleaned(redis_client, prefix):
        yield prefix


class GatedDatabase(Database):
    """A loader that blocks until the test opens the gate (so every reader is in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def load(self, query: PrimerQuery) -> dict:
        assert self.gate.wait(30), "the gate never opened"
        return super().load(query)


def test_fifty_concurrent_misses_in_threads_call_the_loader_once(
    services: dict[str, str], prefix: str
) -> None:
    db = GatedDatabase()
    results: list[dict] = []
    with PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
        threads = [
            threading.Thread(target=lambda: results.append(cache.get(QUERY, db.load)))
            for _ in range(50)
        ]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: cache.stats()["single_flight_waits"] == 49, timeout=20,
                     what="49 readers to wait on the first one's load")  # fmt: skip
        finally:
            db.gate.set()
            for thread in threads:
                thread.join(30)
        assert db.calls == 1
        assert len(results) == 50 and all(version_of(r) == 1 for r in results)
        assert cache.stats()["loader_calls"] == 1 and cache.stats()["fills"] == 1


def test_fifty_concurrent_misses_in_tasks_call_the_loader_once(
    services: dict[str, str], prefix: str
) -> None:
    db = Database()

    async def main() -> list[dict]:
        gate = asyncio.Event()

        async def load(query: PrimerQuery) -> dict:
            await gate.wait()
            return db.load(query)

        async with AsyncPrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
            tasks = [asyncio.create_task(cache.get(QUERY, load)) for _ in range(50)]
            deadline = time.monotonic() + 20
            while cache.stats()["single_flight_waits"] < 49:
                assert time.monotonic() < deadline, "49 tasks never waited on the first"
                await asyncio.sleep(0.01)
            gate.set()
            results = await asyncio.gather(*tasks)
            assert cache.stats()["fills"] == 1
            return results

    results = asyncio.run(main())
    assert db.calls == 1
    assert len(results) == 50 and all(version_of(r) == 1 for r in results)


FILLER = textwrap.dedent(
    """
    import sys, time
    import redis
    from primer_cache_client import PrimerCache, PrimerQuery

    url, prefix, go_key = sys.argv[1:4]
    signal = redis.Redis.from_url(url)

    def load(query):
        print("loading", flush=True)
        deadline = time.monotonic() + 30
        while not signal.exists(go_key):  # the test says when the other process polls
            assert time.monotonic() < deadline
            time.sleep(0.005)
        return {"global_elements": [{"element_id": "e1", "v": 42}]}

    with PrimerCache(url, prefix=prefix) as cache:
        cache.get(PrimerQuery(include_categories=("security",), limit=10), load)
        print(cache.stats()["fills"], flush=True)
    """
)


def test_two_processes_one_fills_the_other_waits_busy_and_serves_the_fill(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    url = services["PRIMER_REDIS_URL"]
    go_key = f"{prefix}go"
    filler = subprocess.Popen(
        [sys.executable, "-c", FILLER, url, prefix, go_key],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=os.environ.copy(),
    )  # fmt: skip
    try:
        assert filler.stdout is not None
        assert filler.stdout.readline().strip() == "loading"  # it holds the lease now
        db = Database()
        with PrimerCache(url, prefix=prefix, busy_wait_s=20.0) as cache:
            got: list[dict] = []
            reader = threading.Thread(target=lambda: got.append(cache.get(QUERY, db.load)))
            reader.start()
            wait_for(lambda: cache.stats()["busy_waits"] == 1, timeout=20, what="busy")
            redis_client.set(go_key, 1, ex=60)
            reader.join(30)
            assert got and version_of(got[0]) == 42  # the other process's fill
            stats = cache.stats()
            assert db.calls == 0 and stats["loader_calls"] == 0
            assert stats["busy_waits"] == 1 and stats["busy_timeouts"] == 0
            assert stats["redis_hits"] == 1
        out, _ = filler.communicate(timeout=30)
        assert filler.returncode == 0 and out.strip() == "1"  # it filled
    finally:
        filler.kill()
        filler.wait()


def test_busy_beyond_the_wait_serves_the_loader_without_filling(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    key = QUERY.key(prefix)
    assert leases.warm_lease(redis_client, key, 60_000)  # someone else's lease stands
    db = Database()
    with PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix, busy_wait_s=0.05) as cache:
        assert version_of(cache.get(QUERY, db.load)) == 1
        stats = cache.stats()
    assert db.calls == 1 and stats["busy_timeouts"] == 1 and stats["fills"] == 0
    assert redis_client.exists(key) == 0


def test_a_revoked_lease_makes_the_fill_refused_and_counted(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    key = QUERY.key(prefix)
    db = Database()

    def load_while_the_sidecar_sweeps(query: PrimerQuery) -> dict:
        leases.invalidate(redis_client, [[key.encode()]], "IDLETIME", 0, 1)  # revokes
        return db.load(query)

    with PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
        assert version_of(cache.get(QUERY, load_while_the_sidecar_sweeps)) == 1
        stats = cache.stats()
    assert stats["refused_fills"] == 1 and stats["fills"] == 0
    assert redis_client.exists(key) == 0


def test_an_undecodable_value_is_deleted_counted_and_replaced(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    key = QUERY.key(prefix)
    redis_client.set(key, b"\x00 not json, not zlib", ex=60)
    db = Database()
    with PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
        assert version_of(cache.get(QUERY, db.load)) == 1
        stats = cache.stats()
    assert stats["undecodable_values"] == 1 and stats["fills"] == 1 and db.calls == 1
    assert redis_client.get(key) != b"\x00 not json, not zlib"


def _every_read_answers_from_the_loader(url: str, timeout_s: float) -> None:
    db = Database()
    with PrimerCache(url, prefix="down:", timeout_s=timeout_s) as cache:
        for n in range(5):
            started = time.monotonic()
            assert version_of(cache.get(PrimerQuery(limit=n + 1), db.load)) == 1
            # a bound, not a speed measure: a read never waits much past the timeout
            assert time.monotonic() - started < timeout_s * 3 + 1.0
        assert db.calls == 5
        assert cache.stats()["cache_faults"] == 5
        assert not cache.stats()["tracking"]["established"]


def test_redis_unreachable_every_read_answers_from_the_loader() -> None:
    _every_read_answers_from_the_loader(f"redis://127.0.0.1:{free_port()}/0", 0.2)


def test_redis_hung_every_read_answers_from_the_loader_within_the_timeout(
    tmp_path: Path,
) -> None:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        server.pause()  # SIGSTOP: connects are accepted by the kernel, nothing answers
        _every_read_answers_from_the_loader(server.url, 0.2)
    finally:
        server.resume()
        server.stop()


def test_async_redis_unreachable_answers_from_the_loader() -> None:
    db = Database()

    async def main() -> dict:
        async with AsyncPrimerCache(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2) as c:
            assert version_of(await c.get(QUERY, db.aload)) == 1
            assert version_of(await c.get(QUERY, db.aload)) == 1
            return c.stats()

    stats = asyncio.run(main())
    assert db.calls == 2 and stats["cache_faults"] == 2


def test_over_tls_reads_fill_and_tracking_work(services: dict[str, str]) -> None:
    """rediss:// (the private TLS-only Redis): the tracking connections are made like the
    reading ones, certificates included."""
    url = services.get("PRIMER_REDIS_TLS_URL")
    assert url, "PRIMER_REDIS_TLS_URL is not set (run `make services`)"
    admin = redis.Redis.from_url(url)
    leases.load_library(admin)
    prefix = fresh_prefix()
    db = Database()
    with cleaned(admin, prefix), PrimerCache(url, prefix=prefix) as cache:
        assert cache.tracking.wait_established(10), "tracking over TLS"
        for _ in range(3):
            assert version_of(cache.get(QUERY, db.load)) == 1
        stats = cache.stats()
        assert db.calls == 1 and stats["fills"] == 1 and stats["cache_faults"] == 0
    admin.close()


class ReadThenWait(Database):
    """A loader that reads its rows first, then waits for the gate: a change can land between
    the rows it read and the fill."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.loading = threading.Event()

    def load(self, query: PrimerQuery) -> dict:
        response = super().load(query)
        if self.calls == 1:
            self.loading.set()
            assert self.gate.wait(30), "the gate never opened"
        return response


def test_waiters_do_not_take_an_answer_whose_rows_changed_while_loading(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    """The first reader loads version 1 and is held; another request joins it; the rows
    change and the sidecar revokes the lease. The first reader's fill is refused and it
    answers what it read (current when it read it); the one waiting reads again: version 2."""
    db = ReadThenWait()
    key = QUERY.key(prefix)
    with PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
        assert cache.tracking.wait_established(10)
        got: dict[str, dict] = {}
        first = threading.Thread(target=lambda: got.update(first=cache.get(QUERY, db.load)))
        first.start()
        assert db.loading.wait(20)
        waiter = threading.Thread(target=lambda: got.update(waiter=cache.get(QUERY, db.load)))
        waiter.start()
        wait_for(lambda: cache.stats()["single_flight_waits"] == 1, timeout=20, what="joined")
        db.version = 2
        leases.invalidate(redis_client, [[key.encode()]], "IDLETIME", 0, 1)  # revokes
        db.gate.set()
        first.join(30)
        waiter.join(30)
        assert version_of(got["first"]) == 1 and version_of(got["waiter"]) == 2
        assert cache.stats()["refused_fills"] == 1 and db.calls == 2


def test_async_waiters_do_not_take_an_answer_whose_rows_changed_while_loading(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    db = Database()
    key = QUERY.key(prefix)

    async def main() -> tuple[dict, dict, dict]:
        gate = asyncio.Event()
        loading = asyncio.Event()

        async def load(query: PrimerQuery) -> dict:
            response = db.load(query)
            if db.calls == 1:
                loading.set()
                await gate.wait()
            return response

        async with AsyncPrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
            first = asyncio.create_task(cache.get(QUERY, load))
            await loading.wait()
            waiter = asyncio.create_task(cache.get(QUERY, load))
            deadline = time.monotonic() + 20
            while cache.stats()["single_flight_waits"] < 1:
                assert time.monotonic() < deadline, "the second request never joined"
                await asyncio.sleep(0.005)
            db.version = 2
            leases.invalidate(redis_client, [[key.encode()]], "IDLETIME", 0, 1)
            gate.set()
            return await first, await waiter, cache.stats()

    first, waiter, stats = asyncio.run(main())
    assert version_of(first) == 1 and version_of(waiter) == 2
    assert stats["refused_fills"] == 1 and db.calls == 2


def test_a_request_after_an_invalidation_does_not_join_the_read_before_it(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    """A read in progress whose key is invalidated meanwhile (here: a value written and
    deleted under it) is not joined by requests that come after: they read anew."""
    db = ReadThenWait()
    key = QUERY.key(prefix)
    with PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
        assert cache.tracking.wait_established(10)
        got: dict[str, dict] = {}
        first = threading.Thread(target=lambda: got.update(first=cache.get(QUERY, db.load)))
        first.start()
        assert db.loading.wait(20)
        before = cache.tracking.invalidation_messages
        db.version = 2
        redis_client.set(key, b"{}", ex=60)  # the key changes under the read in progress
        redis_client.unlink(key)
        wait_for(lambda: cache.tracking.invalidation_messages >= before + 2, timeout=10,
                 what="the invalidations")  # fmt: skip
        later = threading.Thread(target=lambda: got.update(later=cache.get(QUERY, db.load)))
        later.start()
        try:  # it does not wait for the held read
            wait_for(lambda: "later" in got, timeout=10, what="the later request's answer")
        finally:
            db.gate.set()
            first.join(30)
            later.join(30)
        assert version_of(got["later"]) == 2 and version_of(got["first"]) == 1


def test_a_load_without_a_lease_is_not_joined_by_later_requests(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    """After `busy` runs out, the first reader loads without a lease: nothing would tell it of
    a change, so a request that comes while it loads reads for itself."""
    db = ReadThenWait()
    key = QUERY.key(prefix)
    assert leases.warm_lease(redis_client, key, 60_000)  # someone else is filling the key
    with PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix, busy_wait_s=0.02) as cache:
        got: dict[str, dict] = {}
        first = threading.Thread(target=lambda: got.update(first=cache.get(QUERY, db.load)))
        first.start()
        assert db.loading.wait(20)  # it read version 1 and is held
        db.version = 2
        later = threading.Thread(target=lambda: got.update(later=cache.get(QUERY, db.load)))
        later.start()
        try:
            wait_for(lambda: "later" in got, timeout=10, what="the later request's answer")
        finally:
            db.gate.set()
            first.join(30)
            later.join(30)
        assert version_of(got["first"]) == 1 and version_of(got["later"]) == 2
        assert cache.stats()["single_flight_waits"] == 0 and cache.stats()["busy_timeouts"] == 2
