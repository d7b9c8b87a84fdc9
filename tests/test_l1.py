"""The primer server's in-process L1, kept exact by Redis server-assisted client-side caching
(`CLIENT TRACKING on REDIRECT <id> BCAST PREFIX <key prefix>`, a connection subscribed to
`__redis__:invalidate`): the L1 copy goes when the sidecar invalidates its key, and when the
L2 key is evicted (a private redis-server with a tiny maxmemory and allkeys-lru)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

import tests.warm_fixtures  # noqa: F401  (tasks.app reads the services' URLs from os.environ)
from adapters.redis import leases
from config.query import Query
from core.batch import Batch
from core.predicate import ElementImage
from tasks.work.invalidation import run_invalidation
from tasks.work.runtime import Runtime
from tests.conftest import IN_CI
from tests.private_servers import private_redis
from tests.services import wait_for
from tests.sidecar import Sidecar, isolated

INVALIDATE_CHANNEL = "__redis__:invalidate"


class L1:
    """What the primer server keeps in process: a dict in front of Redis, emptied of every key
    Redis says changed. The invalidations come on their own connection (RESP2 REDIRECT)."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.copies: dict[str, bytes] = {}
        # RESP2 (redis-py 8 speaks RESP3 by default): a RESP2 subscriber gets REDIRECTed
        # invalidations as messages on the channel, as every client library can read them.
        self.redis = redis.Redis(host=host, port=port, protocol=2, single_connection_client=True)
        # kept: a dropped client closes its pool, and the subscriber's connection with it
        self.sub_client = redis.Redis(host=host, port=port, protocol=2)
        self.sub = self.sub_client.pubsub(ignore_subscribe_messages=True)
        self.sub.subscribe(INVALIDATE_CHANNEL)
        sub_id = self._client_id(self.sub)
        self.redis.execute_command(
            "CLIENT", "TRACKING", "on", "REDIRECT", sub_id, "BCAST", "PREFIX", prefix
        )

    def get(self, key: str) -> bytes | None:
        self.drain()
        if key in self.copies:
            return self.copies[key]
        answer = leases.read(self.redis, key, 5000)
        if answer.kind == "hit":
            self.copies[key] = answer.payload
            return answer.payload
        return None  # a miss: the server would query the database and fill (not needed here)

    def _client_id(self, sub: redis.client.PubSub) -> int:
        """The subscriber connection's id, found by its address in CLIENT LIST."""
        assert sub.connection is not None
        host, port = sub.connection._sock.getsockname()[:2]  # type: ignore[union-attr]
        (found,) = [c for c in self.redis.client_list() if c["addr"] == f"{host}:{port}"]
        return int(found["id"])

    def drain(self) -> None:
        while (message := self.sub.get_message(timeout=0)) is not None:
            keys = message["data"]
            if keys is None:  # the whole database was flushed
                self.copies.clear()
                continue
            for key in keys:
                self.copies.pop(key.decode("utf-8", "surrogateescape"), None)

    def holds(self, key: str) -> bool:
        self.drain()
        return key in self.copies

    def close(self) -> None:
        self.redis.close()
        self.sub.close()
        self.sub_client.close()


@pytest.fixture
def car(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[Sidecar]:
    with isolated(Sidecar, services, mysql_params, redis_client, tmp_path) as sidecar:
        yield sidecar


def test_l1_copy_goes_when_the_sidecar_invalidates_its_key(car: Sidecar) -> None:
    kwargs = car.redis.connection_pool.connection_kwargs
    l1 = L1(kwargs["host"], kwargs["port"], car.key_prefix)
    rt = Runtime(car.settings)
    try:
        leases.load_library(car.redis)
        hit, spared = (car.keys.build(Query((c,))) for c in ("security", "development"))
        car.redis.set(hit, b"old security", ex=60)
        car.redis.set(spared, b"development", ex=60)
        assert l1.get(hit) == b"old security" and l1.get(spared) == b"development"
        done = run_invalidation(
            rt, Batch.of([ElementImage("security", Decimal("0.5"), "required")])
        )
        assert done.deleted == 1, done
        wait_for(lambda: not l1.holds(hit), timeout=10, what="the L1 copy to be invalidated")
        assert l1.holds(spared)  # not affected: its L1 copy stays
        assert l1.get(hit) is None  # and the next read goes to Redis, which misses
    finally:
        l1.close()
        rt.drop_db()


@pytest.fixture
def tiny_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A private redis-server that evicts: maxmemory 2 MB, allkeys-lru."""
    try:
        with private_redis(
            tmp_path, "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"
        ) as client:
            yield client
    except FileNotFoundError as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_l1_copy_goes_when_its_l2_key_is_evicted(tiny_redis: redis.Redis) -> None:
    port = tiny_redis.connection_pool.connection_kwargs["port"]
    prefix = "megamind:primer:"
    key = f"{prefix}primer:security:0.0:all:priority_desc:100"
    leases.load_library(tiny_redis)
    tiny_redis.set(key, b"x" * 1000)
    l1 = L1("127.0.0.1", port, prefix)
    try:
        assert l1.get(key) == b"x" * 1000
        filler = 0

        def evicted() -> bool:
            nonlocal filler
            pipe = tiny_redis.pipeline(transaction=False)
            for _ in range(200):  # filler outside the prefix: only evictions reach the L1
                pipe.set(f"filler:{filler}", b"y" * 1000)
                filler += 1
            pipe.execute()
            return not tiny_redis.exists(key)

        wait_for(evicted, timeout=30, interval=0, what="LRU to evict the primer key")
        wait_for(lambda: not l1.holds(key), timeout=10, what="the eviction to reach the L1")
    finally:
        l1.close()
