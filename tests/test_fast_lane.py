"""The listener's fast lane (worker.fast_lane): the known keys a change affects go as soon as
the listener reads it, with no worker running at all; unaffected keys stay; leases on the
deleted keys are revoked (with refresh on, the hot ones held for it, as the sweep does:
tests/test_leases.py's refresh test fails when the fast lane deletes them plainly); the sweep
still runs and completes the batch. And the snapshot of known names (core.known_keys)
against a brute-force model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Connection

from adapters.redis.leases import load_library
from adapters.redis.unlink import Heat, unlink_with_leases
from config.query import Query
from config.settings import DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat, leader_key, lease_key
from core.known_keys import KnownNames, runs
from core.predicate import ChangeIndex, ElementImage, category_listed
from tests.services import delete_prefix, fast_lane_known, free_port, unique, wait_for
from tests.sidecar import Sidecar, isolated
from tests.strategies import categories, images, queries

KEYS = KeyFormat("megamind:primer:", DEFAULT_KEY_TEMPLATE)
SCANNED = "fast lane: knows"


def waiting(car: Sidecar, queue: str) -> int:
    """Messages waiting in a queue of the sidecar's broker (a passive declare)."""
    with Connection(car.settings.celery.broker_url, connect_timeout=5) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


def _names(picked: list[Query]) -> list[bytes]:
    return [KEYS.build(query).encode() for query in picked]


# ---- the snapshot (pure) -------------------------------------------------------------------


odd_names = st.sampled_from([b"megamind:primer:primer:x", b"megamind:primer:primer:a:nan:all:p:1"])


@given(
    st.lists(queries, max_size=30),
    st.lists(odd_names, max_size=2),
    st.lists(images, min_size=1, max_size=3),
)
@settings(max_examples=200)
def test_affected_is_what_a_sweep_would_delete_of_the_names_that_parse(
    picked: list[Query], odd: list[bytes], change: list[ElementImage]
) -> None:
    names = _names(picked) + odd
    known = KnownNames(KEYS, limit=1000).rebuilt(names)
    index = ChangeIndex(change)
    judge = KEYS.judge(index.affects)
    # Names that do not parse are left to the sweep, which deletes, names and counts them.
    expected = {raw for raw in names if judge(raw.decode()) is True}
    assert sorted(known.affected(index.affects)) == sorted(expected)  # each once, no other
    # Judging only the keys that may list one of the change's categories finds the same.
    assert sorted(known.affected(index.affects, index.categories)) == sorted(expected)


@given(st.lists(st.sampled_from(["a", "b", "a_b", "", "c_"]), min_size=1, max_size=4), categories)
def test_runs_are_the_categories_a_key_may_list(parts: list[str], category: str) -> None:
    cats = "_".join(parts)
    assert (category in runs(cats)) == category_listed(category, cats)


@given(st.lists(st.lists(st.integers(0, 12), max_size=8), min_size=1, max_size=6))
@settings(max_examples=200)
def test_a_name_is_kept_while_one_of_the_last_scans_saw_it(scans: list[list[int]]) -> None:
    every = [KEYS.build(Query(("security",), limit=n + 1)).encode() for n in range(13)]
    known = KnownNames(KEYS, limit=1000, retain=3)
    for found in scans:
        known = known.rebuilt([every[n] for n in found])
    recent = {every[n] for found in scans[-3:] for n in found}
    assert set(known.affected(lambda _filter: True)) == recent
    assert len(known) == len(recent)


def test_carried_names_are_kept_a_snapshot_never_changes_and_too_many_keep_none() -> None:
    names = _names([Query(("a",), limit=n) for n in range(1, 6)])
    first = KnownNames(KEYS, limit=5, retain=1).rebuilt(names[3:])
    # names[0] was deleted ahead of a sweep since: likely refilled, so kept though not found
    second = first.rebuilt(names[1:3], carried=names[:1])
    assert sorted(second.affected(lambda _f: True)) == sorted(names[:3])
    assert sorted(first.affected(lambda _f: True)) == sorted(names[3:])  # as it was
    third = second.rebuilt([*names, b"megamind:primer:primer:b:0.0:all:p:9"])  # 6 > limit
    assert len(third) == 0 and third.affected(lambda _f: True) == []
    assert len(second) == 3


# ---- the delete against a real Redis ---------------------------------------------------------


@pytest.fixture
def keys(redis_client: redis.Redis) -> Iterator[KeyFormat]:
    prefix = unique("fl") + ":"
    yield KeyFormat(prefix + "megamind:primer:", DEFAULT_KEY_TEMPLATE)
    delete_prefix(redis_client, prefix)
    delete_prefix(redis_client, f"primer-cache:lease:{{{prefix}")


def test_unlink_revokes_the_leases(redis_client: redis.Redis, keys: KeyFormat) -> None:
    present, absent, spared = (keys.build(Query((c,))) for c in ("a", "b", "c"))
    for key in (present, spared):
        redis_client.set(key, b"v")
    lease_names = [lease_key(key) for key in (present, absent, spared)]
    for lease in lease_names:
        assert lease is not None
        redis_client.hset(lease, "token", "1")
    done = unlink_with_leases(redis_client, [present.encode(), absent.encode()])
    assert (done.deleted, done.leases_revoked, done.held) == (1, 2, [])
    assert redis_client.exists(present, absent, *lease_names[:2]) == 0
    assert redis_client.exists(spared, lease_names[2]) == 2


def test_unlink_holding_hot_keys_as_the_sweep_does(
    redis_client: redis.Redis, keys: KeyFormat
) -> None:
    """With refresh on: deleted and revoked in one step with taking the lease on the hot keys
    (here: the one whose lease stood; bound -1 makes no idle time hot)."""
    load_library(redis_client)
    cold, leased = (keys.build(Query((c,))) for c in ("a", "b"))
    redis_client.set(cold, b"v")
    redis_client.set(leased, b"v")
    lease = lease_key(leased)
    assert lease is not None
    redis_client.hset(lease, "token", "old")
    done = unlink_with_leases(
        redis_client, [cold.encode(), leased.encode()], heat=Heat("IDLETIME", -1)
    )
    assert (done.deleted, done.leases_revoked) == (2, 1)
    ((key, answer, token),) = done.held
    assert key == leased and answer >= 0 and token not in ("", "old")
    assert redis_client.hget(lease, "token") == token.encode()  # readers are told busy
    assert redis_client.exists(cold, leased, lease_key(cold) or "") == 0


# ---- end to end: no worker ---------------------------------------------------------------------


@pytest.fixture
def car(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[Sidecar]:
    with isolated(Sidecar, services, mysql_params, redis_client, tmp_path) as sidecar:
        yield sidecar


def _scanned(car: Sidecar, after: int = 0) -> None:
    """Wait for the listener's fast lane to finish a scan that began after the keys were set."""
    assert car.listener is not None
    wait_for(
        lambda: car.listener is not None and car.listener.output().count(SCANNED) > after,
        timeout=20,
        what="the fast lane's first scan",
    )


def test_known_keys_go_with_no_worker_running_and_the_sweep_still_completes(
    car: Sidecar,
) -> None:
    car.insert_chunk("fl1", "security", "0.90", "required")
    hit, hit_all, miss, miss_level = car.plant(
        Query(("security",)),
        Query((), 0.5),
        Query(("development",)),
        Query(("security",), enforcement_level="optional"),
    )
    hit_lease, miss_lease = lease_key(hit), lease_key(miss)
    assert hit_lease is not None and miss_lease is not None
    car.redis.set(hit_lease, b"token")  # a primer server's fill in flight
    car.redis.set(miss_lease, b"token")
    car.start_listener()  # no worker: batches wait in the broker
    _scanned(car)
    car.execute("UPDATE megamind_chunks SET content = 'new' WHERE chunk_id = 'fl1'")
    wait_for(
        lambda: not car.redis.exists(hit, hit_all, hit_lease),
        timeout=5,
        what="the fast lane to delete the affected keys and revoke their lease",
    )
    assert car.redis.exists(miss, miss_level, miss_lease) == 3, "unaffected keys were deleted"
    # The batches still wait for their sweeps (the cold-start flush, then the change): once a
    # worker runs, they are done and the checkpoint moves past the change.
    car.start_worker()
    car.sync()
    car.checkpointed()


def test_with_the_fast_lane_off_nothing_goes_before_the_sweep(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with isolated(
        Sidecar,
        services,
        mysql_params,
        redis_client,
        tmp_path,
        listener_toml="fast_lane_max_keys = 0\n",
    ) as car:
        car.insert_chunk("fl2", "security", "0.90", "required")
        (hit,) = car.plant(Query(("security",)))
        car.start_listener()
        car.execute("UPDATE megamind_chunks SET content = 'new' WHERE chunk_id = 'fl2'")
        # The listener runs the fast lane on a change before it publishes the change's batch:
        # once that batch waits in the queue (after the cold start's flush), a fast lane
        # would have deleted the key by now. No worker: nothing else can have.
        wait_for(
            lambda: waiting(car, f"{car.tag}.invalidate") >= 2,
            timeout=30,
            what="the cold start's flush and the change's batch in the queue",
        )
        assert car.redis.exists(hit) == 1
        assert car.listener is not None and SCANNED not in car.listener.output()
        car.start_worker()
        car.sync()
        assert car.redis.exists(hit) == 0


def test_a_listener_that_loses_the_lead_keeps_its_snapshot_warm_and_leads_with_it(
    car: Sidecar,
) -> None:
    """Another listener takes the lock (as after this one stalled): this one stands by, and its
    fast lane goes on scanning (its snapshot must be warm the moment it leads again: it learns
    a key filled while it stood by); once the lock is free again it leads, and scans on."""
    port = free_port()
    listener = car.start_listener(metrics_port=port)
    _scanned(car)
    lock = leader_key(car.state_prefix)
    car.redis.set(lock, b"another-listener", px=60_000)  # the lead taken over
    wait_for(
        lambda: "standing by" in listener.output(), timeout=30, what="the listener to stand by"
    )
    known = fast_lane_known(port)
    car.plant(Query(("filled-while-standing-by",)))
    wait_for(
        lambda: fast_lane_known(port) == known + 1,
        timeout=30,
        what="a standby's scan to learn a key filled while it stood by",
    )
    scans = listener.output().count(SCANNED)
    car.redis.delete(lock)  # the other listener is gone: this one leads again
    _scanned(car, after=scans)
