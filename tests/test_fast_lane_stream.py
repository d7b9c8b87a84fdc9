"""The fast lane's own binlog stream (worker.fast_lane_stream): a standby deletes a change's
known keys beside a leader that cannot (stopped, and holding a long lock), and a delete that
failed while the cache Redis was away is made once it is back, with no worker running and no
term reading; its server_id never meets the listener's."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis
from hypothesis import given
from hypothesis import strategies as st

from config.query import Query
from tests.private_servers import PrivateRedis
from tests.services import wait_for
from tests.sidecar import Sidecar, isolated
from worker.fast_lane import FastLane
from worker.fast_lane_stream import FastLaneStream, own_server_id

GONE_WITHIN_S = 5.0  # generous for a loaded machine; the lock below holds for 60 s


@given(st.integers(min_value=1, max_value=2**32 - 1), st.integers(min_value=1, max_value=2**32 - 1))
def test_the_streams_server_id_is_never_a_listeners_own_and_never_shared(a: int, b: int) -> None:
    assert 1 <= own_server_id(a) <= 2**32 - 1
    assert own_server_id(a) != a
    if a != b:
        assert own_server_id(a) != own_server_id(b)


def test_a_standby_deletes_beside_a_leader_that_cannot(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The leader is SIGSTOPped holding a 60 s lock (its connection lives: no takeover), and no
    worker runs: only the standby's fast lane stream can delete the change's key."""
    with isolated(
        Sidecar, services, mysql_params, redis_client, tmp_path, leader_ttl_ms=60_000
    ) as car:
        worker = car.start_worker()
        leader = car.start_listener()
        car.sync()
        car.checkpointed()
        worker.stop()
        hit, miss = car.plant(Query(("beside",)), Query(("elsewhere",)))
        standby = car.start_listener_standby()
        wait_for(
            lambda: "following the binlog" in standby.output(),
            timeout=30,
            what="the standby's fast lane stream",
        )
        os.kill(leader.proc.pid, signal.SIGSTOP)
        try:
            car.insert_chunk("b1", "beside")
            wait_for(
                lambda: hit not in car.present([hit]),
                timeout=GONE_WITHIN_S,
                what=f"{hit}: deleted by the standby while the leader is stopped",
            )
            assert car.present([miss]) == {miss}, "an unaffected key was deleted"
            assert "streaming from" not in standby.output(), "the standby took the lead"
        finally:
            os.kill(leader.proc.pid, signal.SIGCONT)


def test_a_delete_that_failed_while_the_cache_redis_was_away_is_made_once_it_is_back(
    services: dict[str, str], mysql_params: dict, tmp_path: Path
) -> None:
    """The stream alone, in this process: no listener, no worker; the cache Redis is killed
    (its keys kept on disk), a change is read and its delete fails; the Redis restarts and the
    owed delete is made."""
    cache = PrivateRedis(tmp_path / "cache", persistent=True)
    cache.start()
    try:
        env = {**services, "PRIMER_REDIS_URL": cache.url}
        with isolated(Sidecar, env, mysql_params, cache.client(), tmp_path) as car:
            hit, miss, before = car.plant(
                Query(("owed",)), Query(("elsewhere",)), Query(("owed-before",))
            )
            fast_lane = FastLane(car.settings)
            fast_lane.scan()
            stream = FastLaneStream(car.settings, fast_lane, "test")
            stream.follow(None)
            try:
                wait_for(lambda: stream.position, timeout=30, what="the stream to open")
                # following: a change before the outage is deleted by it
                car.insert_chunk("o1", "owed-before")
                wait_for(lambda: not car.present([before]), timeout=30, what="the stream to run")
                cache.kill()
                car.insert_chunk("o2", "owed")
                wait_for(lambda: stream.feed.owed, timeout=30, what="the delete to be owed")
                cache.start()
                back = time.monotonic()
                wait_for(
                    lambda: hit not in car.present([hit]),
                    timeout=GONE_WITHIN_S,
                    what=f"{hit}: the owed delete made once the cache Redis is back",
                )
                print(f"\nOWED: made {time.monotonic() - back:.2f} s after the Redis was back")
                assert car.present([miss]) == {miss}, "an unaffected key was deleted"
                assert not stream.feed.owed
            finally:
                stream.stop()
                fast_lane.stop()
    finally:
        cache.stop()
