"""A fill's marker evicted while a sweep runs (issue 22, item 4), on a private Redis under
volatile-ttl: the sweep must still delete the stale value the fill wrote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis

from adapters.redis.lease_library import FILL, READ
from adapters.redis.leases import load_library
from config.query import Query
from config.settings import DEFAULT_KEY_TEMPLATE
from core.keys import KeyFilter, KeyFormat, lease_key
from tasks.work.sweep import markers_may_be_gone, sweep
from tests.private_servers import private_redis

KEYS = KeyFormat("evict:megamind:primer:", DEFAULT_KEY_TEMPLATE)
FILLERS = 5000  # persistent keys the sweep walks through, ten per SCAN
COUNT = 10
BALLAST = b"x" * 65_536


class OnKey(list[bytes]):
    """The list a sweep appends every cache key it finds to (its `seen`): runs `action` once
    when `key` is appended, with the sweep paused there."""

    def __init__(self, key: bytes, action: Callable[[], None]) -> None:
        super().__init__()
        self.key, self.action, self.fired = key, action, False

    def append(self, item: bytes) -> None:
        super().append(item)
        if item == self.key and not self.fired:
            self.fired = True
            self.action()


def _scan_order(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(count=COUNT))


def _doomed_key_with_a_late_lease(client: redis.Redis) -> tuple[Query, str, str, bytes]:
    """A cache key K, its lease name L and a filler F such that SCAN meets K, then F, and L
    only well after (SCAN's order is the hash table's, fixed while the table keeps its size)."""
    for n in range(200):
        query = Query((f"stale{n}",))
        key = KEYS.build(query)
        lease = lease_key(key)
        assert lease is not None
        client.set(key, b"probe")
        client.hset(lease, "n", 0)
        order = _scan_order(client)
        client.delete(key, lease)
        at_key, at_lease = order.index(key.encode()), order.index(lease.encode())
        after = [k for k in order[at_key + 1 : at_lease - 100] if k.startswith(b"evict:")]
        if after:
            return query, key, lease, after[0]
    raise AssertionError("no cache key whose lease SCAN meets well after it")


def _evict_until_gone(client: redis.Redis, lease: str) -> None:
    """Push the server over maxmemory with volatile ballast (TTL 1 h) until `lease` (TTL 60 s,
    the smallest, so the first volatile-ttl victim) has been evicted."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 262_144)
    for n in range(500):
        if not client.exists(lease):
            return
        client.set(f"ballast:{n}", BALLAST, ex=3600)
    raise AssertionError(f"{lease} was not evicted")


def test_a_fill_whose_marker_is_evicted_mid_sweep_is_swept_again(tmp_path: Path) -> None:
    with private_redis(
        tmp_path, "--maxmemory-policy", "volatile-ttl", "--maxmemory-samples", "10"
    ) as client:
        load_library(client)
        pipe = client.pipeline(transaction=False)
        for n in range(FILLERS):
            pipe.set(KEYS.build(Query((f"other{n}",))), b"kept")  # no TTL: never evicted
        pipe.execute()
        query, key, lease, filler = _doomed_key_with_a_late_lease(client)
        # A reader misses and takes a lease; it reads the old rows; the change commits.
        kind, token = client.fcall(READ, 1, key, 30_000)
        assert kind == b"lease"

        def fill_then_evict_the_marker() -> None:
            # SCAN has passed the key (absent) but not yet its lease: the fill is accepted,
            # and the marker it leaves is evicted before SCAN gets there.
            assert client.fcall(FILL, 1, key, token, b"old rows", 86_400) == 1
            before = int(client.info("stats")["evicted_keys"])
            _evict_until_gone(client, lease)
            assert int(client.info("stats")["evicted_keys"]) > before
            assert client.get(key) == b"old rows", "the stale fill itself must stay for the test"

        stale = KeyFilter.of(query)
        hook = OnKey(filler, fill_then_evict_the_marker)
        result = sweep(client, KEYS, lambda f: f == stale, count=COUNT, seen=hook)
        assert hook.fired, "the sweep never reached the filler after the key"
        assert client.get(key) is None, "the stale fill survived the sweep"
        assert result.repeats == 1


def test_a_sweep_is_repeated_only_when_a_marker_may_be_gone() -> None:
    assert markers_may_be_gone({"": 3}, {"": 3}, 1.0) == ""
    assert "evicted" in markers_may_be_gone({"": 3}, {"": 4}, 1.0)
    assert "evicted" in markers_may_be_gone({"": 3}, {"": None}, 1.0)  # unreadable: repeat
    assert "60 s" in markers_may_be_gone({"": 3}, {"": 3}, 61.0)  # outlived the marker
    assert "primaries changed" in markers_may_be_gone({"a": 1}, {"b": 1}, 1.0)
    two = {"a": 1, "b": 2}
    assert markers_may_be_gone(two, dict(two), 1.0) == ""
    assert "on b" in markers_may_be_gone(two, {"a": 1, "b": 5}, 1.0)
