"""Deleting the keys the last sweep saw before sweeping (tasks.known_keys) against a real
Redis: the early delete plus the sweep delete exactly what the sweep alone would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.query import Query
from config.settings import DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat, lease_key
from core.predicate import ChangeIndex, ElementImage
from tasks.work.known_keys import KnownKeys, known_for
from tasks.work.sweep import delete_keys, sweep
from tests.services import delete_prefix, unique
from tests.strategies import images, queries


@pytest.fixture
def keys(redis_client: redis.Redis) -> Iterator[KeyFormat]:
    prefix = unique("kk") + ":"
    yield KeyFormat(prefix + "megamind:primer:", DEFAULT_KEY_TEMPLATE)
    delete_prefix(redis_client, prefix)
    delete_prefix(redis_client, f"primer-cache:lease:{{{prefix}")


def _present(client: redis.Redis, keys: KeyFormat) -> set[bytes]:
    return set(client.scan_iter(match=keys.scan_pattern(), count=1000))


def _plant(client: redis.Redis, keys: KeyFormat, planted: list[Query]) -> None:
    for query in planted:
        client.set(keys.build(query), b"v")


def _snapshot(client: redis.Redis, keys: KeyFormat, known: KnownKeys) -> None:
    """A sweep that deletes nothing, as the snapshot's source."""
    saw = known.start(keys)
    sweep(client, keys, lambda _filter: False, seen=saw)
    known.finish()


def test_known_affected_keys_go_first_and_the_sweep_finds_the_rest(
    redis_client: redis.Redis, keys: KeyFormat
) -> None:
    old_hit, old_miss = Query(("security",)), Query(("process",))
    _plant(redis_client, keys, [old_hit, old_miss])
    known = KnownKeys()
    _snapshot(redis_client, keys, known)
    new_hit = Query(("security",), limit=7)  # written after the snapshot: unknown
    _plant(redis_client, keys, [new_hit])
    lease = lease_key(keys.build(old_hit))
    assert lease is not None
    redis_client.set(lease, b"filled")
    index = ChangeIndex([ElementImage("security", None, None)])

    early = delete_keys(redis_client, known.affected(keys, index.affects))
    assert early.deleted == 1 and early.leases_revoked == 1
    assert _present(redis_client, keys) == {
        keys.build(new_hit).encode(),
        keys.build(old_miss).encode(),
    }
    rest = sweep(redis_client, keys, index.affects)
    assert rest.deleted == 1
    assert _present(redis_client, keys) == {keys.build(old_miss).encode()}


def test_a_snapshot_serves_only_its_own_key_format(
    redis_client: redis.Redis, keys: KeyFormat
) -> None:
    """Names known under one format are never judged (as unparseable, so doomed) under
    another: a process whose batches come with another format starts a fresh snapshot."""
    _plant(redis_client, keys, [Query(("security",))])
    known = KnownKeys()
    _snapshot(redis_client, keys, known)
    other = KeyFormat(unique("kk") + ":megamind:primer:", DEFAULT_KEY_TEMPLATE)
    index = ChangeIndex([ElementImage("development", None, None)])
    assert known.affected(other, index.affects) == []
    assert known.start(other) == []  # a rebuild is due at once, from the new format's sweep
    known.finish()
    assert len(known) == 0


def test_a_snapshot_over_the_limit_is_not_kept(redis_client: redis.Redis, keys: KeyFormat) -> None:
    _plant(redis_client, keys, [Query(("a",), limit=n) for n in range(1, 6)])
    known = KnownKeys(limit=3)
    _snapshot(redis_client, keys, known)
    assert len(known) == 0
    known = KnownKeys(limit=5)
    _snapshot(redis_client, keys, known)
    assert len(known) == 5


@given(
    st.lists(queries, max_size=25),
    st.lists(queries, max_size=10),
    st.lists(images, min_size=1, max_size=3),
)
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_early_delete_then_sweep_equals_the_sweep_alone(
    redis_client: redis.Redis,
    keys: KeyFormat,
    before: list[Query],
    after: list[Query],
    change: list[ElementImage],
) -> None:
    index = ChangeIndex(change)
    delete_prefix(redis_client, keys.prefix)
    _plant(redis_client, keys, before)
    known = KnownKeys()
    _snapshot(redis_client, keys, known)
    _plant(redis_client, keys, after)  # keys the snapshot never saw
    everything = _present(redis_client, keys)
    expected = {raw for raw in everything if not index.affects(keys.parse(raw.decode()).filter)}

    delete_keys(redis_client, known.affected(keys, index.affects))
    assert _present(redis_client, keys) >= expected  # the early delete spares the unaffected
    sweep(redis_client, keys, index.affects)
    assert _present(redis_client, keys) == expected


def test_a_name_deleted_and_refilled_is_known(redis_client: redis.Redis, keys: KeyFormat) -> None:
    # The primer server refills a deleted key under its old name: the next batch that
    # affects it must find it in the snapshot, though the last sweep deleted it.
    hit = Query(("security",))
    _plant(redis_client, keys, [hit])
    index = ChangeIndex([ElementImage("security", None, None)])
    known = KnownKeys()
    saw = known.start(keys)
    assert sweep(redis_client, keys, index.affects, seen=saw).deleted == 1
    known.finish()
    _plant(redis_client, keys, [hit])
    assert known.affected(keys, index.affects) == [keys.build(hit).encode()]


def test_each_keyspace_has_its_own_snapshot(keys: KeyFormat) -> None:
    # A name found under one prefix (or in one Redis) must never be judged by, or deleted
    # for, another: a process may serve several (tests, operator commands).
    other = KeyFormat(unique("kk") + ":megamind:primer:", DEFAULT_KEY_TEMPLATE)
    assert known_for("redis://a/0", keys) is known_for("redis://a/0", keys)
    assert known_for("redis://a/0", keys) is not known_for("redis://a/0", other)
    assert known_for("redis://a/0", keys) is not known_for("redis://b/0", keys)
