"""Database failover (issue 21 item 3): the listener, given the primary and a GTID replica as
its sources, follows the replica when the primary is SIGKILLed and the replica promoted; it
resumes from its checkpoint's GTID on the new primary, so every change committed before and
after the promotion is invalidated. A promoted replica that lacks part of the checkpoint
(transactions it never received) ends in a flush, logged at ERROR and counted.

Both MariaDB servers are the test's own (tests.private_servers); the shared ones are never
touched.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from config.query import Query
from tests.private_servers import (
    PrivateMariaDB,
    caught_up,
    gtid_replica,
    promote,
    replicate,
)
from tests.services import (
    connect,
    free_port,
    schema_statements,
    scrape,
    unique,
    wait_for,
)
from tests.sidecar import Sidecar
from tests.workload import Workload

CATCH_UP_TIMEOUT = 90.0  # generous: other test runs share the machine


@contextmanager
def primary_and_replica(workdir: Path) -> Iterator[tuple[PrivateMariaDB, PrivateMariaDB, str]]:
    """A primary, a GTID replica of it, and a database with the primer tables on both."""
    with ExitStack() as stack:
        primary = PrivateMariaDB(workdir / "primary")
        primary.start()
        stack.callback(primary.stop)
        replica = gtid_replica(workdir / "replica")
        replica.start()
        stack.callback(replica.stop)
        replicate(primary, replica)
        database = unique("pcf_")
        primary.sql(
            f"CREATE DATABASE `{database}`",
            f"USE `{database}`",
            *schema_statements(),
        )
        wait_for(lambda: caught_up(primary, replica), timeout=30, what="the schema replicated")
        yield primary, replica, database


@contextmanager
def failover_sidecar(
    services: dict[str, str],
    primary: PrivateMariaDB,
    replica: PrivateMariaDB,
    database: str,
    client: redis.Redis,
    workdir: Path,
) -> Iterator[Sidecar]:
    env = {**services, "PRIMER_MYSQL_URL": f"{primary.url},{replica.url}"}
    conn = connect(primary.params, database)
    car = Sidecar(env, database, conn, client, workdir, redeliver_after_s=5)
    assert len(car.settings.sources) == 2
    try:
        yield car
    finally:
        car.stop()
        conn.close()


def test_the_listener_follows_a_promoted_replica(
    services: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    with (
        primary_and_replica(tmp_path) as (primary, replica, database),
        failover_sidecar(services, primary, replica, database, redis_client, tmp_path) as car,
    ):
        car.start_worker()
        listener = car.start_listener()
        work = Workload(car, random.Random(31))
        work.seed()
        for _ in range(10):
            work.change()
        car.sync()
        # The listener is frozen before the last burst: it has read none of it when the
        # primary dies, so those changes come only from its checkpoint on the new primary.
        os.killpg(listener.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(15):
                work.change()
            wait_for(lambda: caught_up(primary, replica), timeout=30, what="the replica")
            primary.kill()
            promote(replica)
        finally:
            os.killpg(listener.proc.pid, signal.SIGCONT)
        car.conn = connect(replica.params, database)  # the application follows, too
        for _ in range(15):
            work.change()
        work.wait_complete(
            "primary SIGKILLed, replica promoted", time.monotonic(), CATCH_UP_TIMEOUT
        )
        assert "is the primary now" in listener.output()
        assert "LACKS PART OF CHECKPOINT" not in listener.output()
        assert listener.alive()


def seq_of(position: str) -> int:
    (gtid,) = [part for part in position.split(",") if part.startswith("0-")]
    return int(gtid.rsplit("-", 1)[1])


def errant_up_to_the_checkpoint(replica: PrivateMariaDB, car: Sidecar) -> None:
    """Transactions of the replica's own (domain 0, its server id) up to the checkpoint's
    sequence number."""
    checkpoint = car.checkpoint()
    assert checkpoint is not None
    ((here,),) = replica.sql("SELECT @@GLOBAL.gtid_binlog_pos")
    missing = seq_of(str(checkpoint["gtid"])) - seq_of(str(here))
    assert missing >= 2
    replica.sql(
        "CREATE TABLE test.errant (n INT)",
        *(f"INSERT INTO test.errant VALUES ({n})" for n in range(missing - 1)),
    )
    ((after,),) = replica.sql("SELECT @@GLOBAL.gtid_binlog_pos")
    assert seq_of(str(after)) == seq_of(str(checkpoint["gtid"])), (after, checkpoint)


@pytest.mark.parametrize("history", ["missing", "errant"])
def test_a_promoted_replica_lacking_the_checkpoint_ends_in_a_flush(
    services: dict[str, str], redis_client: redis.Redis, tmp_path: Path, history: str
) -> None:
    """`missing`: the replica never got the last transactions. `errant`: it also wrote as
    many of its own, so its position has the checkpoint's sequence number from another
    server (a diverged history, which MariaDB without gtid_strict_mode streams from)."""
    with (
        primary_and_replica(tmp_path) as (primary, replica, database),
        failover_sidecar(services, primary, replica, database, redis_client, tmp_path) as car,
    ):
        car.start_worker()
        metrics_port = free_port()
        listener = car.start_listener(metrics_port=metrics_port)
        work = Workload(car, random.Random(32))
        work.seed()
        wait_for(lambda: caught_up(primary, replica), timeout=30, what="the replica")
        replica.sql("STOP SLAVE SQL_THREAD")  # held behind: it will lack what follows
        for _ in range(10):
            work.change()
        car.sync()  # the listener read them all: its checkpoint is past the replica
        car.checkpointed()
        primary.kill()
        if history == "errant":
            errant_up_to_the_checkpoint(replica, car)
        promote(replica)
        car.conn = connect(replica.params, database)
        # A flush deletes every key, affected or not: everything planted must go.
        wait_for(
            lambda: not car.present(work.keys),
            timeout=CATCH_UP_TIMEOUT,
            what="the flush after the promoted replica was found lacking",
        )
        assert "LACKS PART OF CHECKPOINT" in listener.output()
        _, body = scrape(metrics_port)
        assert (
            'primer_cache_listener_fallback_flushes_total{reason="source_lacks_position"} 1.0'
            in body
        )
        # and streaming goes on from the new primary
        (key,) = car.plant(Query(("security",)))
        car.insert_chunk(unique("after-flush-"), "security", "0.99", "required")
        wait_for(lambda: not car.present([key]), timeout=CATCH_UP_TIMEOUT, what="a later change")
        assert listener.alive()
