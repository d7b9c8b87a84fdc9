"""The client's L1 is exact: the forced interleaving of issue 18 leaves nothing stale (and the
README recipe's way of storing, on the same schedule, keeps the deleted value), a killed
tracking connection or a restarted Redis empties and bypasses it until tracking is back."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from primer_cache_client import PrimerCache, PrimerQuery
from primer_cache_client.functions import Answer

from adapters.redis import leases
from tests.client_fixtures import Database, cleaned, fresh_prefix, version_of
from tests.private_servers import PrivateRedis
from tests.services import wait_for
from tests.test_l1 import L1 as RecipeL1

QUERY = PrimerQuery(include_categories=("security",))


class PausingCache(PrimerCache):
    """A PrimerCache that runs `after_reply` once a primer_cache_read reply has been read and
    before the read goes on (and stores): the point where issue 18's race happens."""

    after_reply: Callable[[Answer], None] | None = None

    def _fcall_read(self, key: str) -> Answer:
        answer = super()._fcall_read(key)
        hook, self.after_reply = self.after_reply, None
        if hook is not None:
            hook(answer)
        return answer


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = fresh_prefix()
    leases.load_library(redis_client)
    with cleaned(redis_client, prefix):
        yield prefix


def _established(cache: PrimerCache) -> None:
    assert cache.tracking.wait_established(10), "tracking never established"


def in_l1(cache: PrimerCache, query: PrimerQuery, loader: Callable[..., Any]) -> None:
    """Read until the response sits in the L1: a read's store is refused while the
    invalidation of the fill that preceded it is still on its way (as it must be)."""
    key = query.key(cache.options.prefix)
    l1 = cache._path.l1

    def held() -> bool:
        cache.get(query, loader)
        return l1.get(key) is not None

    wait_for(held, timeout=10, what="the response to enter the L1")


def all_invalidations_received(cache: PrimerCache, redis_client: redis.Redis) -> None:
    """Wait until every invalidation Redis has sent this client so far has been received:
    a sentinel key under the prefix is written, and its invalidation comes after them all on
    the same tracking connection."""
    sentinel = f"{cache.options.prefix}sentinel"
    l1 = cache._path.l1
    ticket = l1.begin(sentinel)
    assert ticket is not None
    redis_client.set(sentinel, b"1", ex=60)
    try:
        wait_for(lambda: l1._pending[sentinel][1] > ticket.invalidations, timeout=10,
                 what="the sentinel's invalidation")  # fmt: skip
    finally:
        l1.finish(sentinel, ticket, None)


def _invalidations(cache: PrimerCache) -> int:
    return int(cache.tracking.invalidation_messages)


def test_forced_interleaving_leaves_nothing_stale(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    """Hit reply read; the sidecar deletes the key; the invalidation is received; then the
    store. The client refuses the store (the ticket saw the invalidation)."""
    db = Database()
    key = QUERY.key(prefix)
    with PausingCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
        _established(cache)
        assert version_of(cache.get(QUERY, db.load)) == 1  # miss: loaded and filled
        in_l1(cache, QUERY, db.load)
        all_invalidations_received(cache, redis_client)  # the fill's own, above all
        cache._path.l1.flush()  # the next read goes to Redis and reads a hit
        refused = cache.stats()["l1"]["refused_stores"]
        db.version = 2  # the rows change; the sidecar will delete the key

        def sidecar_deletes_then_invalidation_arrives(answer: Answer) -> None:
            assert answer.kind == "hit"
            before = _invalidations(cache)
            leases.invalidate(redis_client, [[key.encode()]], "IDLETIME", 0, 1000)
            wait_for(lambda: _invalidations(cache) > before, timeout=10,
                     what="the client to receive the invalidation")  # fmt: skip

        cache.after_reply = sidecar_deletes_then_invalidation_arrives
        assert version_of(cache.get(QUERY, db.load)) == 1  # the reply it read (was current)
        assert redis_client.exists(key) == 0
        assert cache.stats()["l1"]["refused_stores"] == refused + 1
        assert cache.stats()["l1"]["size"] == 0
        # Nothing stale: the next read goes past the L1 to Redis (missing) and the loader.
        assert version_of(cache.get(QUERY, db.load)) == 2


def test_the_readme_recipe_keeps_the_deleted_value_on_the_same_schedule(
    redis_client: redis.Redis, prefix: str
) -> None:
    """The hand-written recipe (RESP2 REDIRECT subscriber, store after the reply) on the same
    schedule: its L1 goes on serving a value Redis no longer holds."""
    kwargs = redis_client.connection_pool.connection_kwargs
    recipe = RecipeL1(kwargs["host"], kwargs["port"], prefix)
    key = QUERY.key(prefix)
    try:
        redis_client.set(key, b"old", ex=60)
        recipe.drain()
        answer = leases.read(recipe.redis, key, 5000)  # the hit reply is read
        assert answer.kind == "hit"
        leases.invalidate(redis_client, [[key.encode()]], "IDLETIME", 0, 1000)  # deleted
        wait_for(lambda: recipe.sub.get_message(timeout=0.05) is not None, timeout=10,
                 what="the recipe's subscriber to receive the invalidation")  # fmt: skip
        recipe.drain()  # invalidation processed: the key is not in the L1 yet
        recipe.copies[key] = answer.payload  # then the recipe stores its hit
        assert redis_client.exists(key) == 0
        assert recipe.holds(key), "the recipe was expected to keep the deleted value"
    finally:
        recipe.close()


def _kill_tracking(cache: PrimerCache, redis_client: redis.Redis) -> None:
    ids = cache.tracking.connection_ids()
    assert ids
    for ident in ids:
        redis_client.execute_command("CLIENT", "KILL", "ID", ident)


def test_killed_tracking_connection_empties_and_bypasses_the_l1(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    db = Database()
    key = QUERY.key(prefix)
    with PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix, ping_interval_s=0.2) as cache:
        _established(cache)
        in_l1(cache, QUERY, db.load)
        assert version_of(cache.get(QUERY, db.load)) == 1

        _kill_tracking(cache, redis_client)
        # While the channel is down, keys change: those invalidations are lost.
        db.version = 2
        redis_client.unlink(key)
        wait_for(lambda: cache.stats()["tracking"]["drops"] >= 1, timeout=10,
                 what="the client to notice the dropped channel")  # fmt: skip
        assert version_of(cache.get(QUERY, db.load)) == 2  # bypassed: Redis, then the loader
        db.version = 3
        redis_client.unlink(key)
        assert cache.tracking.wait_established(10), "tracking did not come back"
        assert version_of(cache.get(QUERY, db.load)) == 3  # nothing stale after recovery
        assert version_of(cache.get(QUERY, db.load)) == 3
        in_l1(cache, QUERY, db.load)  # and the L1 works again once tracking is back
        db.version = 4
        before = _invalidations(cache)
        redis_client.unlink(key)
        wait_for(lambda: _invalidations(cache) > before, timeout=10, what="invalidation")
        assert version_of(cache.get(QUERY, db.load)) == 4


def test_redis_restarted_empties_and_bypasses_the_l1(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    db = Database()
    try:
        with PrimerCache(
            server.url, prefix="r:", ping_interval_s=0.2, fault_backoff_s=0.1
        ) as cache:
            _established(cache)  # the client loads the function library itself when missing
            in_l1(cache, QUERY, db.load)
            assert version_of(cache.get(QUERY, db.load)) == 1

            server.stop()
            db.version = 2
            wait_for(lambda: not cache.tracking.established, timeout=10, what="tracking lost")
            assert version_of(cache.get(QUERY, db.load)) == 2  # Redis away: the loader
            server.start()  # comes back empty (no persistence): the library is gone too
            db.version = 3
            assert cache.tracking.wait_established(20), "tracking did not come back"
            wait_for(lambda: version_of(cache.get(QUERY, db.load)) == 3, timeout=10,
                     what="reads to reach Redis again after the fault backoff")  # fmt: skip
            assert cache.stats()["cache_faults"] >= 1
            cache.get(QUERY, db.load)
            stats = cache.stats()
            assert stats["fills"] >= 2, stats  # filled again after the restart
    finally:
        server.stop()


def test_a_forked_child_does_not_trust_the_l1_it_inherited(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    """A pre-forking server (the cache made before the fork): the child has none of the
    parent's tracking threads, so its copy of the L1 is emptied and it tracks on its own."""
    db = Database()
    key = QUERY.key(prefix)
    with PrimerCache(services["PRIMER_REDIS_URL"], prefix=prefix) as cache:
        _established(cache)
        in_l1(cache, QUERY, db.load)
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            code = 1
            try:
                assert cache._path.l1.get(key) is None  # the inherited copy is gone
                assert cache.tracking.wait_established(10)  # its own tracking
                db.version = 2
                redis_client.connection_pool.reset()
                leases.invalidate(redis_client, [[key.encode()]], "IDLETIME", 0, 1)
                wait_for(lambda: version_of(cache.get(QUERY, db.load)) == 2, timeout=10)
                in_l1(cache, QUERY, db.load)  # and its L1 works
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert cache.tracking.established  # the parent's tracking is untouched
