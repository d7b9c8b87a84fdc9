"""The leader lock and the checkpoint it fences, against the real Redis; a real listener
whose binlog stream breaks while it leads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import redis

from config.query import Query
from core.position import Checkpoint, GtidPosition
from tests.services import connect, delete_prefix, unique, wait_for
from tests.sidecar import Sidecar, isolated
from worker.leader import Leadership, LeadershipLost


def test_checkpoint_is_fenced_by_the_leader_lock(redis_client: redis.Redis) -> None:
    prefix = unique("lead") + ":"
    try:
        first = Leadership(redis_client, prefix, ttl_ms=5000)
        second = Leadership(redis_client, prefix, ttl_ms=5000)
        assert first.try_acquire() and not second.try_acquire()
        first.save_checkpoint(Checkpoint(GtidPosition("0-1-5")))
        redis_client.delete(first.lock_key)  # the lock expired...
        assert second.try_acquire()  # ...and another replica took over
        try:
            first.save_checkpoint(Checkpoint(GtidPosition("0-1-9")))
        except LeadershipLost:
            pass
        else:
            raise AssertionError("a replica without the lock wrote a checkpoint")
        assert second.load_checkpoint() == Checkpoint(GtidPosition("0-1-5"))
        second.renew()
        second.release()
        assert second.holder() is None
    finally:
        delete_prefix(redis_client, prefix)


def test_the_holder_keeps_its_lock_and_a_deposed_one_cannot_take_it_back(
    redis_client: redis.Redis,
) -> None:
    """Acquiring again with our own token renews the lock at once (a listener whose stream
    broke streams again without waiting it out); another replica's lock is never touched."""
    prefix = unique("lead") + ":"
    try:
        first = Leadership(redis_client, prefix, ttl_ms=60_000)
        second = Leadership(redis_client, prefix, ttl_ms=60_000)
        assert first.try_acquire()
        redis_client.pexpire(first.lock_key, 1000)
        assert first.try_acquire()  # still ours: kept, and renewed to the full ttl
        assert int(redis_client.pttl(first.lock_key)) > 30_000
        assert not second.try_acquire()
        redis_client.delete(first.lock_key)  # the lock expired ...
        assert second.try_acquire()  # ... and another replica took over
        assert not first.try_acquire()  # the deposed one cannot take it back
        assert second.holder() == second.token
        try:
            first.save_checkpoint(Checkpoint(GtidPosition("0-1-9")))
        except LeadershipLost:
            pass
        else:
            raise AssertionError("a deposed replica wrote a checkpoint")
        assert second.load_checkpoint() is None
    finally:
        delete_prefix(redis_client, prefix)


# ---- a listener whose binlog stream breaks -----------------------------------------------------

LEADER_TTL_MS = 20_000  # long: waiting out its own lock would take 13-20 s


@contextmanager
def listener_user(admin: pymysql.Connection, database: str) -> Iterator[str]:
    """A MySQL user of the listener's own (the grants of docs/operations.md), so that only its
    connections can be killed and refused; yields its name."""
    name = unique("pc_listen_")[:30]
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{name}'")
        cur.execute(f"GRANT REPLICATION SLAVE, SLAVE MONITOR ON *.* TO '{name}'@'%'")
        cur.execute(f"GRANT SELECT ON `{database}`.* TO '{name}'@'%'")
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")


def _break_stream(admin: pymysql.Connection, user: str) -> None:
    """Kill the user's binlog dump connection with its account locked: the replication
    library's own reconnect is refused, so the listener's stream breaks for real."""
    with admin.cursor() as cur:
        cur.execute(f"ALTER USER '{user}'@'%' ACCOUNT LOCK")
        cur.execute(
            "SELECT id FROM information_schema.processlist "
            "WHERE user = %s AND command LIKE 'Binlog Dump%%'",
            (user,),
        )
        # the term's stream, and the fast lane's own while it follows (worker.fast_lane_stream)
        dumps = cur.fetchall()
        assert dumps, "no binlog dump connection to kill"
        for dump in dumps:
            cur.execute(f"KILL CONNECTION {int(dump[0])}")


def test_a_leader_whose_stream_breaks_streams_again_at_once(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """The listener's binlog stream breaks (its connection killed, a reconnect refused); it
    still holds its lock, so it streams again as soon as the server lets it in: a change
    committed right after is deleted long before the lock would have run out (fails by the
    deadline when the listener waits out its own lock)."""
    with isolated(
        Sidecar, services, mysql_params, redis_client, tmp_path, leader_ttl_ms=LEADER_TTL_MS
    ) as car:
        admin = connect(mysql_params)
        try:
            with listener_user(admin, car.database) as user:
                car.start_worker()
                car.env["PRIMER_MYSQL_URL"] = with_user(car.env["PRIMER_MYSQL_URL"], user)
                listener = car.start_listener()
                car.sync()  # the cold-start flush is done, the stream runs ...
                car.checkpointed()  # ... and resumes from here: no flush removes the key below
                (key,) = car.plant(Query(("broken",)))
                _break_stream(admin, user)
                try:
                    wait_for(
                        lambda: "reconnecting in" in listener.output(),
                        timeout=30,
                        what="the listener's stream to break",
                    )
                finally:
                    with admin.cursor() as cur:
                        cur.execute(f"ALTER USER '{user}'@'%' ACCOUNT UNLOCK")
                car.insert_chunk("b1", "broken")
                wait_for(
                    lambda: not car.present([key]),
                    timeout=LEADER_TTL_MS / 2000,
                    what=f"{key} invalidated by the leader streaming again after its stream broke",
                )
                assert "still holds the lead" in listener.output()
        finally:
            admin.close()


def with_user(url: str, user: str) -> str:
    """`url` with `user` (password the same) in place of its credentials."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{user}@{rest.split('@', 1)[-1]}"
