"""The primer_cache function library on a real Redis, and the sidecar revoking its leases:
the primer server's fill that read before a commit is refused once the commit's invalidation
ran (a plain SET on the same schedule stays stale), a lease on an absent key is revoked, two
readers get one lease, hot keys come back fresh after a change and cold ones do not."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.warm_fixtures  # noqa: F401  (tasks.app reads the services' URLs from os.environ)
from adapters.mysql.primer_query import fresh_response
from adapters.redis import leases
from adapters.redis.lease_library import FILLED_GRACE_MS, LIBRARY_NAME
from adapters.redis.unlink import Heat
from config.query import Query
from core.batch import Batch
from core.keys import lease_key
from core.predicate import ElementImage
from core.response import comparable, decode, encode
from tasks.work.consistency import check_cache
from tasks.work.invalidation import run_invalidation
from tasks.work.refresh import heat_probe, refresh_keys, schedule
from tasks.work.runtime import Runtime
from tasks.work.sweep import sweep
from tests.private_servers import private_redis
from tests.services import wait_for
from tests.sidecar import Sidecar, isolated

LEASE_MS = 10_000
SECURITY = Query(("security",))


@pytest.fixture(scope="module")
def car(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sidecar]:
    """A running sidecar with the second pass off: the lease alone must close the race."""
    workdir = tmp_path_factory.mktemp("leases")
    with isolated(Sidecar, services, mysql_params, redis_client, workdir) as sidecar:
        for n in range(6):
            sidecar.insert_chunk(f"s{n}", "security", f"0.{n}5", "required")
            sidecar.insert_chunk(f"d{n}", "development", f"0.{n}5", "optional")
        sidecar.start_worker()
        sidecar.start_listener()
        sidecar.sync()
        yield sidecar


@pytest.fixture(scope="module")
def rt(car: Sidecar) -> Iterator[Runtime]:
    runtime = Runtime(car.settings)
    yield runtime
    runtime.drop_db()


def fresh_value(rt: Runtime, query: Query) -> bytes:
    return encode(fresh_response(rt.db(), rt.settings, query), compression=True)


def same_content(a: bytes | None, b: bytes | None) -> bool:
    return a is not None and b is not None and comparable(decode(a)) == comparable(decode(b))


def key_of(car: Sidecar, *cats: str, limit: int = 100) -> str:
    return car.keys.build(Query(tuple(cats), limit=limit))


# ---- the functions themselves -----------------------------------------------------------------


def test_the_listener_loaded_the_library(car: Sidecar) -> None:
    libraries = car.redis.function_list(library=LIBRARY_NAME)
    assert libraries, "primer_cache is not loaded"


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="ab{}:_", max_size=10))
def test_lua_names_the_lease_as_core_keys_does(car: Sidecar, tail: str) -> None:
    key = f"{car.tag}:{tail}"
    token = leases.warm_lease(car.redis, key, LEASE_MS)
    expected = lease_key(key)
    try:
        assert (token is None) == (expected is None), (key, expected)
        if expected is not None:
            assert car.redis.hget(expected, "token") == token.encode()  # type: ignore[union-attr]
    finally:
        if expected is not None:
            car.redis.delete(expected)


def test_two_readers_missing_one_key_get_one_lease(car: Sidecar) -> None:
    key = key_of(car, "nobody", limit=uuid.uuid4().int % 1000 + 1)
    first = leases.read(car.redis, key, LEASE_MS)
    second = leases.read(car.redis, key, LEASE_MS)
    assert first.kind == "lease" and first.token
    assert second.kind == "busy" and 0 < second.ms_left <= LEASE_MS
    assert leases.fill(car.redis, key, first.token, b"{}", 60)
    assert leases.read(car.redis, key, LEASE_MS) == ("hit", b"{}")
    lease = lease_key(key)
    assert lease is not None
    # Filled: the lease key stays (no token) for the grace period, so a sweep running now
    # still finds it.
    assert car.redis.hget(lease, "token") is None
    assert 0 < car.redis.pttl(lease) <= FILLED_GRACE_MS
    car.redis.delete(key, lease)


def test_a_fill_needs_the_standing_token(car: Sidecar) -> None:
    key = key_of(car, "tokens", limit=uuid.uuid4().int % 1000 + 1)
    token = leases.read(car.redis, key, LEASE_MS).token
    assert token and not leases.fill(car.redis, key, token + "x", b"{}", 60)
    taken_over = leases.warm_lease(car.redis, key, LEASE_MS)
    assert taken_over and taken_over != token
    assert not leases.fill(car.redis, key, token, b"{}", 60)  # the warm took it over
    assert leases.fill(car.redis, key, taken_over, b"{}", 60)
    assert not leases.fill(car.redis, key, taken_over, b"{}", 60)  # a token serves once
    car.redis.delete(key, lease_key(key) or "")


def test_an_expired_lease_refuses_its_fill(car: Sidecar) -> None:
    key = key_of(car, "slow", limit=uuid.uuid4().int % 1000 + 1)
    token = leases.read(car.redis, key, 50).token
    assert token
    wait_for(lambda: not car.redis.exists(lease_key(key) or ""), timeout=5, what="lease expiry")
    assert not leases.fill(car.redis, key, token, b"{}", 60)
    assert not car.redis.exists(key)


def test_unleasable_keys_are_busy_0(car: Sidecar) -> None:
    key = f"{car.key_prefix}primer:a}}b:0.0:all:priority_desc:100"
    assert lease_key(key) is None
    assert leases.read(car.redis, key, LEASE_MS) == ("busy", b"0")
    assert leases.warm_lease(car.redis, key, LEASE_MS) is None


def test_bad_arguments_are_errors_naming_them(car: Sidecar) -> None:
    with pytest.raises(redis.ResponseError, match="lease_ms soon"):
        car.redis.fcall("primer_cache_read", 1, key_of(car, "x"), "soon")
    with pytest.raises(redis.ResponseError, match="ttl_s -1"):
        car.redis.fcall("primer_cache_fill", 1, key_of(car, "x"), "t", b"v", -1)


def test_a_missing_library_is_loaded_again(car: Sidecar, rt: Runtime) -> None:
    car.redis.function_delete(LIBRARY_NAME)
    key = key_of(car, "reload", limit=uuid.uuid4().int % 1000 + 1)
    assert leases.read(car.redis, key, LEASE_MS).kind == "lease"
    assert car.redis.function_list(library=LIBRARY_NAME)
    car.redis.delete(lease_key(key) or "")


def test_old_redis_is_named_with_its_version() -> None:
    message = leases.version_problem("cache:6379", (6, 2))
    assert message and "6.2" in message and "7.0" in message and "cache:6379" in message
    assert leases.version_problem("cache:6379", (7, 0)) is None


def test_functions_load_command(car: Sidecar) -> None:
    done = car.cli("functions", "load")
    assert done.returncode == 0, done.stdout + done.stderr
    assert LIBRARY_NAME in done.stdout


# ---- invalidation revokes -----------------------------------------------------------------------


def test_a_lease_on_an_absent_key_is_revoked_by_a_matching_invalidation(
    car: Sidecar, rt: Runtime
) -> None:
    hit = key_of(car, "security", limit=11)
    spared = key_of(car, "development", limit=11)
    tokens = {key: leases.read(car.redis, key, LEASE_MS).token for key in (hit, spared)}
    assert all(tokens.values()) and not car.redis.exists(hit, spared)
    result = run_invalidation(rt, Batch.of([ElementImage("security", Decimal("0.5"), "required")]))
    assert result.leases_revoked == 1
    assert not leases.fill(car.redis, hit, tokens[hit] or "", b"{}", 60)
    assert leases.fill(car.redis, spared, tokens[spared] or "", b"{}", 60)
    assert not car.redis.exists(hit) and car.redis.exists(spared)
    car.redis.delete(spared, lease_key(spared) or "")


def test_a_flush_revokes_every_lease(car: Sidecar, rt: Runtime) -> None:
    keys = [key_of(car, cat, limit=12) for cat in ("security", "development", "zz")]
    tokens = [leases.read(car.redis, key, LEASE_MS).token for key in keys]
    result = run_invalidation(rt, Batch(flush=True, reason="test"))
    assert result.leases_revoked >= len(keys)
    for key, token in zip(keys, tokens, strict=True):
        assert not leases.fill(car.redis, key, token or "", b"{}", 60)


def test_a_fill_that_landed_is_deleted_by_the_sweep_that_finds_its_lease(
    car: Sidecar, rt: Runtime
) -> None:
    key = key_of(car, "security", limit=13)
    token = leases.read(car.redis, key, LEASE_MS).token
    assert token and leases.fill(car.redis, key, token, b"{}", 60)
    result = run_invalidation(rt, Batch.of([ElementImage("security", Decimal("0.5"), "required")]))
    assert result.leases_revoked >= 1
    assert not car.redis.exists(key, lease_key(key) or "")


@pytest.mark.parametrize("guarded", [True, False], ids=["lease-fill", "plain-set"])
def test_forced_race_a_fill_that_read_before_a_commit(
    car: Sidecar, rt: Runtime, guarded: bool
) -> None:
    """The primer server misses, takes a lease and SELECTs; a commit lands and its whole
    invalidation runs; then the server writes what it read. Through primer_cache_fill the
    write is refused; with a plain SET the stale answer stays (the race the lease closes)."""
    query = Query(("security",), limit=random.randint(200, 900))
    key = car.keys.build(query)
    lease = leases.read(car.redis, key, LEASE_MS)
    assert lease.kind == "lease" and lease.token
    read_before = fresh_value(rt, query)
    sweeps = int(car.redis.hget(f"{car.state_prefix}stats", "sweeps") or 0)
    car.execute("UPDATE megamind_chunks SET content = %s WHERE chunk_id = 's3'", (f"r{guarded}",))
    wait_for(
        lambda: int(car.redis.hget(f"{car.state_prefix}stats", "sweeps") or 0) > sweeps,
        timeout=30,
        what="the commit's invalidation sweep",
    )
    car.sync()
    assert not same_content(read_before, fresh_value(rt, query))
    if guarded:
        assert not leases.fill(car.redis, key, lease.token, read_before, 3600)
        assert car.redis.get(key) is None
    else:
        car.redis.set(key, read_before, ex=3600)
    # Judged by the consistency check (a fresh query per key), not by reading back the write:
    # the plain SET left a stale answer, the refused fill none.
    car.sync()
    stale = [k for k in check_cache(rt).stale if k == key]
    try:
        assert stale == ([] if guarded else [key])
    finally:
        car.redis.delete(key)


# ---- refresh ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hot_car(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sidecar]:
    workdir = tmp_path_factory.mktemp("refresh")
    with isolated(
        Sidecar,
        services,
        mysql_params,
        redis_client,
        workdir,
        refresh=True,
        extra_toml="[refresh]\nidle_seconds = 2\nmax_keys = 50\n",
    ) as sidecar:
        for n in range(6):
            sidecar.insert_chunk(f"s{n}", "security", f"0.{n}5", "required")
        sidecar.start_worker()
        sidecar.start_listener()
        sidecar.sync()
        yield sidecar


def test_refresh_recomputes_hot_keys_and_leaves_cold_ones(hot_car: Sidecar) -> None:
    car = hot_car
    rt = Runtime(car.settings)
    try:
        cold = [Query(("security",), limit=n) for n in (3, 4)]
        hot = [Query(("security",), limit=n) for n in (5, 6)] + [Query(limit=7)]
        for query in (*cold, *hot):
            car.redis.set(car.keys.build(query), fresh_value(rt, query), ex=3600)
        # cold: not read for longer than refresh.idle_seconds (Redis counts idle time itself)
        wait_for(
            lambda: all(car.redis.object("idletime", car.keys.build(q)) >= 3 for q in cold),
            timeout=20,
            what="the cold keys to be idle for 3 s",
        )
        for query in hot:
            car.redis.get(car.keys.build(query))  # read: hot
        before = {q: car.redis.get(car.keys.build(q)) for q in hot}
        car.execute("UPDATE megamind_chunks SET content = 'refreshed' WHERE chunk_id = 's5'")

        def hot_fresh() -> bool:
            return all(
                (value := car.redis.get(car.keys.build(q))) is not None
                and value != before[q]
                and same_content(value, fresh_value(rt, q))
                for q in hot
            )

        wait_for(hot_fresh, timeout=30, what="the hot keys to come back with fresh content")
        assert all(not car.redis.exists(car.keys.build(q)) for q in cold)
        # counted once the refresh has written them all, a moment after the last write
        wait_for(
            lambda: int(car.redis.hget(f"{car.state_prefix}stats", "refreshes") or 0) >= len(hot),
            timeout=30,
            what="the refreshes counted",
        )
    finally:
        rt.drop_db()


def test_readers_wait_for_the_refresh_of_a_hot_key_not_each_miss(car: Sidecar, rt: Runtime) -> None:
    """The sweep takes the lease on each hot key it deletes: a reader is told `busy` (and waits
    for the refresh's fill) instead of getting a lease of its own; a cold key, and a hot one
    the invalidation releases (beyond the refresh budget), are leased to the reader at once."""
    hot, spare, cold = (key_of(car, "security", limit=n) for n in (31, 32, 33))
    for key in (hot, spare):
        car.redis.set(key, b"{}", ex=600)
    # cold: idle for an hour (RESTORE sets the idle time Redis keeps for LRU)
    car.redis.restore(cold, 600_000, car.redis.dump(hot), replace=True, idletime=3600)
    heat = Heat("IDLETIME", 60)
    result = sweep(car.redis, car.keys, lambda key_filter: "security" in key_filter.cats, heat=heat)
    assert sorted(result.held) == sorted([hot, spare]) and result.deleted >= 3
    schedule(rt, [], {spare: result.held[spare]})  # beyond the budget: released
    assert leases.read(car.redis, hot, LEASE_MS).kind == "busy"
    assert leases.read(car.redis, spare, LEASE_MS).kind == "lease"
    assert leases.read(car.redis, cold, LEASE_MS).kind == "lease"
    # the refresh fills under its own lease, which takes the sweep's over
    assert refresh_keys(rt, [hot]).refreshed == 1
    assert leases.read(car.redis, hot, LEASE_MS).kind == "hit"
    car.redis.delete(*(k for key in (hot, spare, cold) for k in (key, lease_key(key) or "")))


def test_a_probe_the_policy_refuses_deletes_all_and_holds_none(car: Sidecar) -> None:
    """OBJECT FREQ on an LRU Redis is an error (the policy changed since it was looked up):
    the sweep still deletes every affected key, and only holds none of them."""
    built = [key_of(car, "security", limit=n) for n in (41, 42)]
    for key in built:
        car.redis.set(key, b"{}", ex=600)
    result = sweep(car.redis, car.keys, lambda f: "security" in f.cats, heat=Heat("FREQ", 6))
    assert result.deleted >= 2 and not car.redis.exists(*built)
    assert not set(built) & set(result.held)


def test_under_lfu_the_sweep_reads_frequency(car: Sidecar, tmp_path: Path) -> None:
    """An LFU Redis refuses OBJECT IDLETIME: the probe asks OBJECT FREQ, and a key read since
    it was written (its counter above the 5 a new key starts at) is hot."""
    with private_redis(tmp_path, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lfu") as lfu:
        port = lfu.connection_pool.connection_kwargs["port"]
        url = f"redis://127.0.0.1:{port}/0"
        rt = Runtime(
            replace(
                car.settings,
                cache=replace(car.settings.cache, url=url),
                refresh=replace(car.settings.refresh, max_keys=10),
            )
        )
        heat = heat_probe(rt)
        assert heat is not None and heat.command == "FREQ"
        hot = [key_of(car, "security", limit=n) for n in (1, 2)]
        cold = [key_of(car, "security", limit=n) for n in (3, 4)]
        for key in (*hot, *cold):
            lfu.set(key, b"{}")
        for key in hot:
            lfu.get(key)
        result = sweep(lfu, car.keys, lambda key_filter: True, heat=heat)
        assert result.deleted == 4
        assert sorted(key for key, _freq in result.hot) == sorted(hot)


def test_refresh_runs_one_select_per_filter(hot_car: Sidecar) -> None:
    rt = Runtime(hot_car.settings)
    try:
        queries = [Query(("security",), limit=n) for n in (1, 2, 50)] + [
            Query(("security",), 0.5, limit=n) for n in (1, 9)
        ]
        keys = [hot_car.keys.build(q) for q in queries]
        bad = f"{hot_car.key_prefix}primer:bad"
        held = leases.hold(hot_car.redis, [*keys, bad], LEASE_MS)  # as the sweep leaves them
        result = refresh_keys(rt, [*keys, bad], held)
        assert (result.refreshed, result.selects, result.skipped) == (5, 2, 1)
        assert leases.read(hot_car.redis, bad, LEASE_MS).kind == "lease"  # released
        for query, key in zip(queries, keys, strict=True):
            assert same_content(hot_car.redis.get(key), fresh_value(rt, query)), key
    finally:
        rt.drop_db()
