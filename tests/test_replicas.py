"""Read replicas against a real GTID replica (scripts/services.sh): invalidation waits until the
replica has applied a change, a late or stopped replica gets follow-up passes that remove
what was filled from it meanwhile, and a replica that cannot be waited for stops the
processes at start (exit 2, naming it)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis

from config.query import SEED_WARM_PATTERNS, Query
from tests.private_servers import free_port
from tests.services import ROOT, VENV_BIN, Process, child_env, cli, connect, wait_for
from tests.sidecar import Sidecar, isolated
from tests.warm_fixtures import WarmEnv, cached, fresh, same, seed_elements, warm_env

# isort: split
# After warm_fixtures: tasks.app reads its settings from os.environ on first use.
from adapters.mysql.primer_query import fresh_response
from core.response import decode, encode

# A query no warm pattern covers: only a primer server's miss fills it (here, from the replica).
AD_HOC = Query(("security",), priority_threshold=0.3, limit=40)
REPLICA_PID = ROOT / ".run" / "replica" / "pid"


def replicas_toml(replica_params: dict[str, Any], max_wait_s: float) -> str:
    url = f"mysql://{replica_params['user']}:@{replica_params['host']}:{replica_params['port']}"
    return f'[replicas]\nurls = ["{url}"]\nmax_wait_s = {max_wait_s}\n'


def primary_position(conn: pymysql.Connection) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        return str(cur.fetchone()[0])


def caught_up(replica: pymysql.Connection, primary: pymysql.Connection) -> None:
    """Wait (bounded, by the server) until the replica has applied all the primary wrote."""
    position = primary_position(primary)
    with replica.cursor() as cur:
        cur.execute("SELECT MASTER_GTID_WAIT(%s, 60)", (position,))
        assert cur.fetchone()[0] == 0, f"replica did not reach {position} within 60 s"


@contextmanager
def sql_thread_stopped(replica: pymysql.Connection) -> Iterator[None]:
    """The replica receives but does not apply: held behind until the block ends."""
    with replica.cursor() as cur:
        cur.execute("STOP SLAVE SQL_THREAD")
    try:
        yield
    finally:
        with replica.cursor() as cur:
            cur.execute("START SLAVE SQL_THREAD")


@contextmanager
def replica_process_stopped() -> Iterator[None]:
    """The replica server frozen (SIGSTOP): down, as far as any client can tell."""
    assert REPLICA_PID.exists(), f"{REPLICA_PID} missing: scripts/services.sh starts the replica"
    pid = int(REPLICA_PID.read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def fill_from(conn: pymysql.Connection, env: WarmEnv, query: Query) -> dict:
    """What a primer server does on a miss: query (here the replica), SET the answer."""
    response = fresh_response(conn, env.settings, query)
    env.cache.set(
        env.keys.build(query),
        encode(response, compression=env.settings.cache.compression),
        ex=env.settings.cache.ttl_seconds,
    )
    return decode(encode(response, compression=False))


# A change to every security element's content: the replica, held, keeps the old answers.
EDIT_SECURITY = (
    "UPDATE megamind_chunks SET content = CONCAT(content, ' (v2)') "
    "WHERE realm_id = 'GLOBAL' AND element_category = 'security'"
)


@contextmanager
def replica_of(
    env: WarmEnv, replica_params: dict[str, Any]
) -> Iterator[tuple[pymysql.Connection, pymysql.Connection]]:
    """The replica, caught up with the primary, and its copy of the test's schema."""
    replica = connect(replica_params)
    try:
        caught_up(replica, env.conn)
        replica_db = connect(replica_params, env.database)
        try:
            yield replica, replica_db
        finally:
            replica_db.close()
    finally:
        replica.close()


def test_the_cold_start_flush_is_followed_up_on_a_late_replica(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    replica_params: dict[str, Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A listener that starts cold flushes at the primary's position; a replica still behind
    it gets a follow-up flush, which removes what a primer server filled from it meanwhile."""
    toml = replicas_toml(replica_params, max_wait_s=1)
    with warm_env(services, mysql_params, redis_client, tmp_path, toml_extra=toml) as env:
        seed_elements(env.conn, 200, random.Random(9))
        env.start_worker()
        key = env.keys.build(AD_HOC)
        with replica_of(env, replica_params) as (replica, replica_db):
            with sql_thread_stopped(replica):
                env.execute(EDIT_SECURITY)
                env.start_listener()  # no checkpoint: a cold-start flush at the new position
                wait_for(
                    lambda: all(cached(env, q) for q in SEED_WARM_PATTERNS),
                    timeout=30,
                    what="the cold start flushing, then warming every seed pattern",
                )
                filled = fill_from(replica_db, env, AD_HOC)  # a miss served by the replica
                assert not same(filled, fresh(env, AD_HOC)), "the replica should be behind"
            wait_for(
                lambda: not env.cache.exists(key),
                timeout=30,
                what=f"the cold-start flush's follow-up to remove the replica's fill of {key}",
            )


# ---- the race, with and without the replica setting ------------------------------------------


@pytest.mark.parametrize("with_replicas", [True, False], ids=["replicas", "no-replicas"])
def test_a_fill_from_a_held_replica_is_gone_once_it_applies_the_change(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    replica_params: dict[str, Any],
    redis_client: redis.Redis,
    tmp_path: Path,
    with_replicas: bool,
) -> None:
    toml = replicas_toml(replica_params, max_wait_s=1) if with_replicas else ""
    with warm_env(services, mysql_params, redis_client, tmp_path, toml_extra=toml) as env:
        seed_elements(env.conn, 200, random.Random(8))
        env.start_worker()
        env.start_listener()
        wait_for(
            lambda: all(cached(env, q) for q in SEED_WARM_PATTERNS),
            timeout=30,
            what="the cold start warming every seed pattern",
        )
        key = env.keys.build(AD_HOC)
        with replica_of(env, replica_params) as (replica, replica_db):
            with sql_thread_stopped(replica):
                env.execute(EDIT_SECURITY)
                env.sync()  # the change's batch has been swept (after max_wait_s, if waiting)
                filled = fill_from(replica_db, env, AD_HOC)  # a miss served by the replica
                assert not same(filled, fresh(env, AD_HOC)), "the replica should be behind"
            caught_up(replica, env.conn)
            if with_replicas:
                wait_for(
                    lambda: not env.cache.exists(key),
                    timeout=30,
                    what=f"the follow-up pass to remove the replica's fill of {key}",
                )
                wait_for(
                    lambda: all(same(cached(env, q), fresh(env, q)) for q in SEED_WARM_PATTERNS),
                    timeout=30,
                    what="every warm key equal to the primary's answer",
                )
                # The follow-up counts its sweep once the sweep has run, a moment after the
                # key is gone: wait for the count, do not read it at once.
                wait_for(
                    lambda: all(
                        int(env.cache.hget(f"{env.state_prefix}stats", name) or 0) >= 1
                        for name in ("replica_followups", "replica_followup_sweeps")
                    ),
                    timeout=30,
                    what="the follow-up pass counted",
                )
            else:
                env.sync()  # everything the sidecar does for the change has been done
                held = cached(env, AD_HOC)
                assert held is not None and same(held, filled)
                assert not same(held, fresh(env, AD_HOC))  # stale until its TTL


# ---- a follow-up the broker refuses to queue (issue 22, item 3) ---------------------------------


def test_a_refused_follow_up_is_retried_not_flushed_and_forgotten(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    replica_params: dict[str, Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A worker whose publishes the broker refuses (Celery's write URL points at a port where
    nothing listens: a real refused connection, kombu OperationalError) sweeps a batch while
    the replica is held, and cannot queue the follow-up. The batch must not end as done: a
    worker that can publish gets it again and follows it up, so a reader's refill from the
    late replica is removed once the replica applies the change. (Before the fix the refused
    publish fell into a fallback flush with no GTID, reported done: the refill stayed.)"""
    toml = replicas_toml(replica_params, max_wait_s=1)
    # Redelivery after 20 s: longer than the refusing worker takes to end the batch either
    # way (each refused send costs ~1 s of retries), so it is the only way the batch comes
    # back, and only when it was not reported done.
    with warm_env(
        services, mysql_params, redis_client, tmp_path, toml_extra=toml, redeliver_after_s=20
    ) as env:
        seed_elements(env.conn, 200, random.Random(8))
        worker = env.start_worker()
        env.start_listener()
        env.sync()  # the cold start is done
        worker.stop()
        env.env["CELERY_BROKER_WRITE_URL"] = f"redis://127.0.0.1:{free_port()}/1"
        refusing = env.start_worker()
        del env.env["CELERY_BROKER_WRITE_URL"]
        key = env.keys.build(AD_HOC)

        def followups() -> int:
            return int(env.cache.hget(f"{env.state_prefix}stats", "replica_followups") or 0)

        with replica_of(env, replica_params) as (replica, replica_db):
            with sql_thread_stopped(replica):
                env.execute(EDIT_SECURITY)
                edit = gtid_seq(primary_position(env.conn))
                wait_for(
                    lambda: followups() >= 1,
                    timeout=30,
                    what="the invalidation to sweep and try to queue its follow-up",
                )
                refusing.stop()  # a warm shutdown: the task it runs ends first
                # Readers refill from the late replica: the old rows.
                filled = fill_from(replica_db, env, AD_HOC)
                assert not same(filled, fresh(env, AD_HOC)), "the replica should be behind"
                env.start_worker()
                wait_for(
                    lambda: followups() >= 2 or gtid_seq(checkpoint(env)) >= edit,
                    timeout=60,
                    what="the batch handed to a worker that can publish (or reported done)",
                )
                filled = fill_from(replica_db, env, AD_HOC)  # and again, after that sweep
            caught_up(replica, env.conn)
            wait_for(
                lambda: not same(cached(env, AD_HOC), filled),
                timeout=30,
                what=f"{key}, refilled from the late replica, to be swept once it caught up",
            )
        assert followups() >= 2
        assert "OperationalError" in refusing.output()


def test_a_fallback_flush_waits_for_the_replica_and_is_followed_up(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    replica_params: dict[str, Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A batch the task cannot process (here a malformed payload, through the real broker and
    worker) falls back to a flush; the flush carries the batch's GTID, so with the replica
    held it gets a follow-up flush, which removes a refill from the replica made after the
    first flush. (Before the fix the flush had no GTID: done at once, the refill stayed.)"""
    from adapters.broker import INVALIDATE_TASK
    from tasks.app import send

    toml = replicas_toml(replica_params, max_wait_s=1)
    with warm_env(services, mysql_params, redis_client, tmp_path, toml_extra=toml) as env:
        seed_elements(env.conn, 200, random.Random(8))
        env.start_worker()
        key = env.keys.build(AD_HOC)

        def fallback_flushes() -> int:
            return int(env.cache.hget(f"{env.state_prefix}stats", "fallback_flushes") or 0)

        with replica_of(env, replica_params) as (replica, replica_db):
            with sql_thread_stopped(replica):
                env.execute(EDIT_SECURITY)
                payload = {
                    "images": 7,  # not a list: Batch.from_json fails, a bug as far as it knows
                    "gtid": primary_position(env.conn),
                    "term": "operator-test",
                    "seq": 1,
                }
                send(INVALIDATE_TASK, [payload], f"{env.tag}.invalidate")
                wait_for(lambda: fallback_flushes() >= 1, timeout=30, what="the fallback flush")
                filled = fill_from(replica_db, env, AD_HOC)  # a refill from the late replica
                assert not same(filled, fresh(env, AD_HOC)), "the replica should be behind"
            caught_up(replica, env.conn)
            wait_for(
                lambda: not same(cached(env, AD_HOC), filled),
                timeout=30,
                what=f"{key}, refilled from the late replica, to be flushed once it caught up",
            )


def test_a_change_is_swept_after_the_replica_applied_it(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    replica_params: dict[str, Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """Within max_wait_s the sweep waits for the replica: a fill from the held replica made
    before it applies the change is swept once it does, by the first pass itself."""
    toml = replicas_toml(replica_params, max_wait_s=20)
    with isolated(Sidecar, services, mysql_params, redis_client, tmp_path, extra_toml=toml) as car:
        car.start_worker()
        car.start_listener()
        car.sync()  # the cold-start flush is done: it would delete the key planted below
        replica = connect(replica_params)
        try:
            caught_up(replica, car.conn)
            (key,) = car.plant(Query(("waits",)))
            with sql_thread_stopped(replica):
                car.insert_chunk("w1", "waits")
                # The sweep holds until the replica applies the insert (a fill from the
                # replica now would still be the old answer): the key stays ...
                wait_for(
                    lambda: _gtid_waits(replica) > 0,
                    timeout=30,
                    what="the worker waiting on the replica (MASTER_GTID_WAIT)",
                )
                assert car.present([key]) == {key}
            # ... and goes once the replica has applied it.
            wait_for(lambda: not car.present([key]), timeout=30, what=f"{key} to be invalidated")
            stats = car.redis.hgetall(f"{car.state_prefix}stats")
            assert b"replica_followups" not in stats  # in time: no follow-up needed
        finally:
            replica.close()


def _gtid_waits(replica: pymysql.Connection) -> int:
    """How many clients wait in MASTER_GTID_WAIT on the replica right now."""
    with replica.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE info LIKE 'SELECT MASTER_GTID_WAIT(%'"
        )
        return int(cur.fetchone()[0])


# ---- a replica down for longer than max_wait_s ------------------------------------------------


def test_a_stopped_replica_does_not_hold_the_pipeline_and_is_followed_up(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    replica_params: dict[str, Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    toml = replicas_toml(replica_params, max_wait_s=0.5)
    with isolated(Sidecar, services, mysql_params, redis_client, tmp_path, extra_toml=toml) as car:
        car.start_worker()
        car.start_listener()
        car.sync()  # the cold-start flush is done
        replica = connect(replica_params)
        caught_up(replica, car.conn)
        replica.close()
        stale: list[str] = []
        before = primary_position(car.conn)
        with replica_process_stopped():
            for n in range(3):
                (key,) = car.plant(Query((f"down{n}",)))
                car.insert_chunk(f"d{n}", f"down{n}")
                # Invalidated on the primary's time although the replica cannot be asked ...
                wait_for(lambda k=key: not car.present([k]), timeout=30, what=f"{key} swept")
                # ... and then refilled by a primer server reading the frozen replica.
                car.plant(Query((f"down{n}",)))
                stale.append(key)
            car.sync()
            assert car.present(stale) == set(stale)  # only the follow-up can remove them
            # Not done until followed up: a restart would replay from before the first.
            assert gtid_seq(checkpoint(car)) <= gtid_seq(before)
        wait_for(
            lambda: not car.present(stale),
            timeout=60,
            what="the follow-up passes to remove the fills made while the replica was down",
        )
        after = primary_position(car.conn)
        wait_for(
            lambda: gtid_seq(checkpoint(car)) >= gtid_seq(after),
            timeout=30,
            what=f"the checkpoint to pass {after} once the follow-ups are done",
        )
        stats = car.redis.hgetall(f"{car.state_prefix}stats")
        assert int(stats[b"replica_followups"]) >= 3


def checkpoint(car: Sidecar) -> str:
    return str((car.checkpoint() or {}).get("gtid", ""))


def gtid_seq(position: str) -> int:
    """The sequence number of domain 0 in a MariaDB GTID position (the primary's domain)."""
    for gtid in filter(None, position.split(",")):
        domain, _server, seq = gtid.strip().split("-")
        if domain == "0":
            return int(seq)
    return 0


# ---- start-up checks --------------------------------------------------------------------------


WORKER = [
    str(VENV_BIN / "celery"),
    *("-A", "tasks", "worker", "-c", "1", "-Q", "replica-check", "--loglevel", "INFO"),
    *("--without-gossip", "--without-mingle", "--without-heartbeat"),
]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        WORKER,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("process", ["listener", "worker"])
def test_a_replica_that_cannot_be_waited_for_stops_the_process(
    services: dict[str, str], mysql_params: dict[str, Any], process: str
) -> None:
    unreachable = f"mysql://root@127.0.0.1:{_free_port()}/megamind"
    # The primary under another name: reachable, but replicating from nobody.
    not_a_replica = f"mysql://root@localhost:{mysql_params['port']}/megamind"
    env = child_env(services, PRIMER_REPLICA_URLS=f"{unreachable},{not_a_replica}")
    done = cli(env, "listen", timeout=60) if process == "listener" else _worker(env)
    assert done.returncode == 2, done.stderr
    assert f"read replica {unreachable.replace('root@', 'root:@')}: cannot connect" in done.stderr
    assert "read replica mysql://root:@localhost:" in done.stderr
    assert "is not replicating" in done.stderr


@pytest.mark.parametrize("held", [False, True], ids=["replicating", "sql-thread-stopped"])
def test_the_real_replica_passes_the_start_check(
    services: dict[str, str], replica_params: dict[str, Any], tmp_path: Path, held: bool
) -> None:
    """A replica held behind is only late: the worker starts, and says so."""
    url = f"mysql://root@{replica_params['host']}:{replica_params['port']}"
    env = child_env(services, PRIMER_REPLICA_URLS=url)
    replica = connect(replica_params)
    try:
        with sql_thread_stopped(replica) if held else contextlib.nullcontext():
            output = _worker_output(env, tmp_path)
    finally:
        replica.close()
    assert "cannot be used" not in output
    assert ("is held behind (IO thread Yes, SQL thread No)" in output) == held, output


def _worker_output(env: dict[str, str], tmp_path: Path) -> str:
    proc = Process(
        WORKER,
        env,
        tmp_path / "worker.log",
    )
    try:
        wait_for(
            lambda: "ready" in proc.output() or not proc.alive(), timeout=60, what="worker ready"
        )
        assert proc.alive(), proc.output()
        return proc.output()
    finally:
        proc.stop()
