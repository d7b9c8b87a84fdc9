"""Lag-aware batching: the pacer's rules (pure), and a real stall of the listener."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import redis

from config.query import SEED_WARM_PATTERNS, Query
from tests.services import wait_for
from tests.sidecar import Sidecar, isolated
from worker.pacing import BEHIND_AFTER, CATCH_UP_WINDOW, GAP, Pacer

LIVE = 0.02
NOW = 1000.0  # monotonic seconds
WALL = 1_800_000_000.0  # epoch seconds


def caught_up_pacer() -> Pacer:
    return Pacer(5000, LIVE, catching_up=False)


def test_caught_up_a_batch_goes_out_once_nothing_more_is_readable() -> None:
    pacer = caught_up_pacer()
    pacer.took(NOW, WALL, first=True)
    assert not pacer.hold(NOW, WALL, rows=1, readable=False)  # idle: at once
    assert pacer.hold(NOW, WALL, rows=1, readable=True)  # more already there: coalesce
    assert not pacer.hold(NOW + LIVE, WALL, rows=5, readable=True)  # but not for long


def test_behind_a_batch_grows_while_transactions_keep_coming() -> None:
    pacer = caught_up_pacer()
    old = WALL - BEHIND_AFTER - 1  # read long after it was committed: a stall, say
    pacer.took(NOW, old, first=True)
    assert pacer.behind(NOW, WALL, readable=False)
    assert pacer.hold(NOW + GAP / 2, WALL, rows=1, readable=False)  # the reader is mid-stream
    pacer.took(NOW + 0.5, old, first=False)
    assert pacer.hold(NOW + 0.5, WALL, rows=500, readable=True)
    assert not pacer.hold(NOW + CATCH_UP_WINDOW, WALL, rows=900, readable=True)  # bounded
    assert not pacer.hold(NOW + 0.5, WALL, rows=5000, readable=True)  # by size too


def test_the_end_of_a_backlog_is_where_the_stream_goes_quiet() -> None:
    # Commit times say "late" to the very end of a backlog: what ends it is no more input.
    pacer = caught_up_pacer()
    pacer.took(NOW, WALL - 10, first=True)
    assert not pacer.behind(NOW + 2 * GAP, WALL, readable=False)
    assert not pacer.hold(NOW + 2 * GAP, WALL, rows=10, readable=False)


def test_recent_commits_are_not_behind() -> None:
    pacer = caught_up_pacer()
    pacer.took(NOW, WALL - 1, first=True)  # binlog times have 1 s resolution
    assert not pacer.behind(NOW, WALL, readable=True)


def test_the_backlog_after_a_start_is_behind_until_read() -> None:
    pacer = Pacer(5000, LIVE)
    pacer.took(NOW, WALL, first=True)
    assert pacer.hold(NOW + 0.5, WALL, rows=10, readable=False)
    pacer.backlog_read()
    assert not pacer.hold(NOW + 0.5, WALL, rows=10, readable=False)


# ---- a real stall ---------------------------------------------------------------------------


def test_a_stalled_listener_catches_up_in_few_batches_and_warms_once(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    commits = 1500
    # A lock that outlives the stall: SIGSTOP is a stall here, not a lost lead.
    with isolated(
        Sidecar, services, mysql_params, redis_client, tmp_path, warm=True, leader_ttl_ms=120_000
    ) as car:
        car.start_worker()
        car.start_listener()
        car.insert_chunk("hot", "process", "0.90", "required")  # in a seed warm pattern
        car.sync()
        assert car.listener is not None and car.worker is not None
        stats = f"{car.state_prefix}stats"
        sweeps_before = int(car.redis.hget(stats, "sweeps") or 0)
        warms_before = car.worker.output().count("primer_cache.warm[")
        car.listener.proc.send_signal(signal.SIGSTOP)
        try:
            with car.conn.cursor() as cur:
                for i in range(commits):
                    cur.execute(
                        "UPDATE megamind_chunks SET content = %s WHERE chunk_id = 'hot'", (str(i),)
                    )
            last_commit = time.time()
            (key,) = car.plant(Query(("process",), 0.5, "required", limit=7))
            # Until the commits are old enough that reading them is being behind.
            wait_for(lambda: time.time() - last_commit > BEHIND_AFTER + 1, timeout=10)
        finally:
            car.listener.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: not car.redis.exists(key), timeout=60, what="the stalled change")
        car.sync()
        sweeps = int(car.redis.hget(stats, "sweeps") or 0) - sweeps_before
        # 1,500 commits read in well under the 1 s window: a few batches (and the sync's).
        assert sweeps <= 6, f"{sweeps} sweeps for {commits} stalled commits"
        assert car.listener.output().count("streaming from") == 1, "the stall became a restart"
        # Warms waited for the catch-up, then ran once per pattern (warm_all).
        warm_key = car.keys.build(SEED_WARM_PATTERNS[2])  # process, required
        wait_for(lambda: car.redis.exists(warm_key), timeout=30, what="the warm after catch-up")
        warms = car.worker.output().count("primer_cache.warm[") - warms_before
        assert warms <= 2 * 3 * 2, f"{warms} warm task log lines"  # received + succeeded
