"""Takeover in about a second: the leader lock is short and renewed by a thread of its own
(worker.leader), a standby tries it often and has warmed up before it waits. Against the real
Redis, and with real listeners started with one configuration (no setting of their own)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config import ListenerSettings
from config.query import Query
from core.position import Checkpoint, GtidPosition
from tests.services import delete_prefix, unique, wait_for
from tests.sidecar import Sidecar, isolated
from worker import leader
from worker.leader import Leadership, LeadershipLost

GONE_WITHIN_S = 5.0  # generous for a loaded machine; a 10 s lock cannot meet it


# ---- the lock's renewer, against the real Redis ---------------------------------------------


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    name = unique("lead") + ":"
    yield name
    delete_prefix(redis_client, name)


def _leadership(client: redis.Redis, prefix: str, ttl_ms: int) -> Leadership:
    renew_client = redis.Redis(connection_pool=client.connection_pool)
    return Leadership(client, prefix, ttl_ms, renew_client=renew_client)


def test_the_renewer_holds_a_short_lock_while_the_loop_lives(
    redis_client: redis.Redis, prefix: str
) -> None:
    first = _leadership(redis_client, prefix, ttl_ms=500)
    second = _leadership(redis_client, prefix, ttl_ms=500)
    assert first.try_acquire()
    first.start_renewing()
    try:
        deadline = time.monotonic() + 2.0  # four TTLs: the loop does nothing but live
        while time.monotonic() < deadline:
            first.alive()
            first.check()
            assert not second.try_acquire()
            time.sleep(0.05)  # the loop's pace, not a wait for a condition
        first.save_checkpoint(Checkpoint(GtidPosition("0-1-5")))
    finally:
        first.stop_renewing()
    wait_for(second.try_acquire, timeout=5, what="the lock to run out once not renewed")


def test_a_stalled_loop_lets_the_lock_go(
    redis_client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leader, "LOOP_STALL_S", 0.5)
    first = _leadership(redis_client, prefix, ttl_ms=500)
    second = _leadership(redis_client, prefix, ttl_ms=500)
    assert first.try_acquire()
    first.start_renewing()
    try:
        # no alive(): after LOOP_STALL_S the renewer stops renewing, and the lock runs out
        wait_for(second.try_acquire, timeout=5, what="a stalled leader's lock to run out")
        wait_for(lambda: _lost(first), timeout=5, what="the renewer to find the lock lost")
    finally:
        first.stop_renewing()
    with pytest.raises(LeadershipLost):
        first.save_checkpoint(Checkpoint(GtidPosition("0-1-9")))  # fenced


def test_a_lock_taken_over_is_reported_to_the_loop(redis_client: redis.Redis, prefix: str) -> None:
    first = _leadership(redis_client, prefix, ttl_ms=2000)  # renewed every 0.5 s
    assert first.try_acquire()
    first.start_renewing()
    try:
        redis_client.set(first.lock_key, b"another-listener", px=60_000)
        wait_for(lambda: _lost(first), timeout=5, what="the renewer to find the lock another's")
    finally:
        first.stop_renewing()


def test_a_holder_whose_connection_is_gone_is_replaced_without_waiting_out_its_lock(
    services: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    """A 60 s lock: only the holder's connection dropping (a dead process) can free it soon.
    While the connection lives (a stopped or slow leader), the lock is the holder's."""
    renew_client = redis.Redis.from_url(services["PRIMER_REDIS_URL"])  # a pool of its own
    first = Leadership(redis_client, prefix, 60_000, renew_client=renew_client)
    second = _leadership(redis_client, prefix, ttl_ms=60_000)
    assert first.try_acquire()
    first.start_renewing()
    wait_for(
        lambda: redis_client.exists(first.connection_key),
        timeout=5,
        what="the renewer to record its connection",
    )
    first.stop_renewing()  # stalled, but connected
    assert not second.take_over_from_a_dead_holder() and not second.try_acquire()
    renew_client.connection_pool.disconnect()  # what the kernel does for a killed process
    assert second.take_over_from_a_dead_holder() and second.try_acquire()
    assert not redis_client.exists(first.connection_key)  # the dead holder's record went too
    with pytest.raises(LeadershipLost):
        first.save_checkpoint(Checkpoint(GtidPosition("0-1-9")))  # still fenced


def _lost(lead: Leadership) -> bool:
    lead.alive()
    try:
        lead.check()
    except LeadershipLost:
        return True
    return False


# ---- real listeners -------------------------------------------------------------------------


def _sidecar(services: dict[str, str], mysql: dict[str, Any], client: redis.Redis, tmp: Path):  # type: ignore[no-untyped-def]
    # The default lock TTL: the one a deployment gets.
    return isolated(
        Sidecar, services, mysql, client, tmp, leader_ttl_ms=ListenerSettings.leader_ttl_ms
    )


def test_a_standby_takes_over_within_about_a_second_of_a_sigkill(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Two listeners with one configuration (neither sets a server_id); the leader is
    SIGKILLed; a change committed just after is gone within GONE_WITHIN_S of its commit (the
    lock's TTL, a standby's poll and its start; fails with the old 10 s lock)."""
    with _sidecar(services, mysql_params, redis_client, tmp_path) as car:
        car.start_worker()
        first = car.start_listener()
        car.sync()
        car.checkpointed()  # the standby resumes from here: no flush removes the key below
        (key,) = car.plant(Query(("takeover",)))
        standby = car.start_listener_standby()
        # ready: its fast lane's snapshot is warm before it leads (one scan at start-up)
        assert "fast lane: knows 1 key names" in standby.output()
        first.kill()
        car.insert_chunk("t1", "takeover")
        committed = time.monotonic()
        wait_for(
            lambda: not car.present([key]),
            timeout=GONE_WITHIN_S,
            what=f"{key}: a change committed just after the leader's SIGKILL invalidated",
        )
        print(f"\nTAKEOVER: gone {time.monotonic() - committed:.2f} s after its commit")
        # noticed by the leader's connection dropping, not by its lock running out
        assert "connection to Redis is gone" in standby.output()
        assert "streaming from" in standby.output() and "COLD START" not in standby.output()


def test_a_paused_leader_costs_duplicates_never_a_missed_delete(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A false takeover: the leader is SIGSTOPped (a long stall), the standby takes over and
    invalidates; the old leader resumes, finds the lock another's and stands by, without a
    checkpoint of its own; a change after that is still invalidated (by the new leader)."""
    with _sidecar(services, mysql_params, redis_client, tmp_path) as car:
        car.start_worker()
        first = car.start_listener()
        car.sync()
        car.checkpointed()
        standby = car.start_listener_standby()
        keys = car.plant(Query(("paused",)), Query(("resumed",)))
        os.kill(first.proc.pid, signal.SIGSTOP)
        try:
            car.insert_chunk("p1", "paused")
            wait_for(
                lambda: keys[0] not in car.present(keys),
                timeout=GONE_WITHIN_S,
                what="a change made while the leader is paused, invalidated by the standby",
            )
        finally:
            os.kill(first.proc.pid, signal.SIGCONT)
        wait_for(
            lambda: "lost the leader lock" in first.output(),
            timeout=30,
            what="the resumed leader to find its lock lost",
        )
        car.insert_chunk("r1", "resumed")
        wait_for(lambda: not car.present(keys), timeout=30, what="a change after it invalidated")
        car.sync()
        assert "streaming from" in standby.output()
        assert first.alive() and standby.alive()


def test_an_idle_leader_with_a_long_lock_stops_on_sigterm_and_hands_over(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A deployment may set a long lock (a leader that must survive long stalls). Idle, the
    leader still sees SIGTERM: it exits on its own (not SIGKILLed after the stop's 10 s) and
    releases the lock, so the next listener leads at once instead of after the lock's 10
    minutes (an idle wait of a quarter of the lock's renewal interval kept it 75 s)."""
    with isolated(
        Sidecar, services, mysql_params, redis_client, tmp_path, leader_ttl_ms=600_000
    ) as car:
        car.start_worker()
        first = car.start_listener()
        car.sync()
        assert first.stop(timeout=10) == 0, first.output()[-2000:]
        second = car.spawn_listener()
        wait_for(
            lambda: "streaming from" in second.output() or not second.alive(),
            timeout=30,
            what="the next listener to lead (the stopped one released its lock)",
        )
        assert second.alive(), second.output()[-2000:]
