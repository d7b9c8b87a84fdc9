"""Issue 22's seams, reproduced end to end: real MariaDB (binlog), Redis, a Celery worker and
a listener (subprocesses), each sequence the way it broke the promise before its fix."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis

from config.query import Query
from tests.services import connect, wait_for
from tests.sidecar import Sidecar, isolated


@pytest.fixture(scope="module")
def sidecar(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sidecar]:
    workdir = tmp_path_factory.mktemp("seams")
    with isolated(Sidecar, services, mysql_params, redis_client, workdir) as car:
        car.start_worker()
        car.start_listener()
        car.sync()
        yield car


def q(*cats: str, thr: float = 0.0, level: str = "all") -> Query:
    return Query(tuple(cats), thr, level)


def check(car: Sidecar, gone: list[Query], kept: list[Query], change: str, *args: object) -> None:
    """Plant keys, make the change, wait for the pipeline; `gone` must go, `kept` must stay."""
    car.sync()
    gone_keys, kept_keys = car.plant(*gone), car.plant(*kept)
    car.execute(change, args or None)
    car.sync()
    assert car.present(gone_keys) == set(), "affected keys survived"
    assert car.present(kept_keys) == set(kept_keys), "unaffected keys were deleted"


# ---- seam 1: collation ---------------------------------------------------------------------


def test_elements_equal_under_the_collation_invalidate_their_keys(sidecar: Sidecar) -> None:
    """utf8mb4_general_ci (MariaDB's default) calls 'Security' security, 'testing ' testing and
    realm 'global' GLOBAL: the primer query returns these elements for those keys, so an
    update of each must delete them."""
    sidecar.insert_chunk("cased", "Security", "0.70", "required")
    check(
        sidecar,
        [q("security"), q("process", "security")],
        [q("testing")],
        "UPDATE megamind_chunks SET priority_score = 0.75 WHERE chunk_id = 'cased'",
    )
    sidecar.insert_chunk("padded", "testing ", "0.70", "recommended")
    check(
        sidecar,
        [q("testing"), q("testing", level="recommended")],
        [q("security"), q("testing", level="optional")],
        "UPDATE megamind_chunks SET priority_score = 0.75 WHERE chunk_id = 'padded'",
    )
    sidecar.insert_chunk("lower-realm", "process", "0.70", "required", realm="global")
    # (the sync sentinel is level `optional`: these all-categories keys are the change's own)
    check(
        sidecar,
        [q(level="required"), q("process")],
        [q(level="recommended"), q("security")],
        "UPDATE megamind_chunks SET priority_score = 0.75 WHERE chunk_id = 'lower-realm'",
    )


# ---- seam 2: DDL behind a prefix --------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "/* migrate:42 */ TRUNCATE TABLE megamind_chunks",
        "SET STATEMENT max_statement_time=60 FOR TRUNCATE TABLE megamind_global_elements",
        "-- migrate:43\nALTER TABLE megamind_chunks COMMENT = 'seams'",
        "/*M!100101 ALTER TABLE megamind_chunks COMMENT = 'seams versioned' */",
    ],
)
def test_ddl_behind_a_prefix_flushes_every_key(sidecar: Sidecar, statement: str) -> None:
    sidecar.sync()
    keys = sidecar.plant(q("security"), q("development", thr=0.9), q(thr=0.5))
    sidecar.execute("SET foreign_key_checks = 0")  # TRUNCATE of a referenced table
    try:
        sidecar.execute(statement)
    finally:
        sidecar.execute("SET foreign_key_checks = 1")
    sidecar.sync()
    assert sidecar.present(keys) == set(), f"keys survived {statement!r}"


# ---- seam 5: in the binlog before readers on the primary see it ------------------------------


def test_a_commit_readers_cannot_see_yet_is_swept_only_once_they_can(
    sidecar: Sidecar, mysql_params: dict, admin: pymysql.Connection
) -> None:
    """A transaction is written to the binlog (and sent to the listener) before the engine
    commit makes it visible: the group-commit gap, held open here by an XA transaction, which
    MariaDB binlogs at XA PREPARE. Before: the sweep ran inside the gap; a reader took a
    fresh lease after it, read the old row and filled, and the old answer stayed."""
    sidecar.insert_chunk("gap-1", "security", "0.50", "required")
    sidecar.sync()
    (witness,) = sidecar.plant(q(thr=0.4, level="required"))  # goes when the batch is swept
    key = sidecar.keys.build(q("security"))
    writer = connect(mysql_params, sidecar.database)
    reader = connect(mysql_params, sidecar.database)
    try:
        with writer.cursor() as cur:
            cur.execute("XA START 'seams5'")
            cur.execute(
                "UPDATE megamind_chunks SET content = 'new', priority_score = 0.90 "
                "WHERE chunk_id = 'gap-1'"
            )
            cur.execute("XA END 'seams5'")
            cur.execute("XA PREPARE 'seams5'")  # in the binlog now; readers see the old row
        wait_for(
            lambda: not sidecar.present([witness]) or lock_waits(admin),
            what="the batch to be swept, or to wait for the prepared row",
        )
        kind, token = sidecar.redis.fcall("primer_cache_read", 1, key, 5000)
        assert kind == b"lease"
        with reader.cursor() as cur:  # the reader's SELECT: the old row
            cur.execute(
                f"SELECT content FROM `{sidecar.database}`.megamind_chunks WHERE chunk_id = 'gap-1'"
            )
            assert cur.fetchone() == ("content of gap-1",)
        assert sidecar.redis.fcall("primer_cache_fill", 1, key, token, b"old answer", 3600) == 1
        with writer.cursor() as cur:
            cur.execute("XA COMMIT 'seams5'")
    finally:
        with contextlib.suppress(pymysql.Error), writer.cursor() as cur:
            cur.execute("XA ROLLBACK 'seams5'")  # when the test failed before the commit
        writer.close()
        reader.close()
    sidecar.sync()
    assert sidecar.redis.get(key) != b"old answer", "a fill from before the commit survived"
    assert not sidecar.present([witness])


def lock_waits(admin: pymysql.Connection) -> int:
    """Statements of the worker waiting for a prepared row's lock (tasks/visibility.py)."""
    with admin.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE '%%LOCK IN SHARE MODE%%' AND ID <> CONNECTION_ID()"
        )
        (count,) = cur.fetchone()
    return int(count)


# ---- seam 8: an event neither decoder can read -------------------------------------------------


def test_an_undecodable_event_flushes_is_stepped_past_and_stays_unhealthy_until_acked(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """MariaDB's COMPRESSED columns: python-mysql-replication fails on the table map of any
    table that has one (ValueError: 101 is not a valid MetadataFieldType). Before: the reader
    stopped, the listener resumed from the same checkpoint and failed again, forever."""
    with isolated(Sidecar, services, mysql_params, redis_client, tmp_path) as car:
        car.start_worker()
        car.start_listener()
        assert car.cli("partitions", "ensure").returncode == 0  # status: partitions ahead
        car.sync()
        assert status(car)["undecodable_events"] is None
        car.execute("ALTER TABLE megamind_chunks ADD COLUMN notes TEXT COMPRESSED NULL")
        keys = car.plant(q("development", thr=0.9), q("security"))
        car.insert_chunk("compressed-1", "process", "0.10", "optional")  # undecodable
        car.sync()  # its sentinel is written to the same table: undecodable too, flushed
        assert car.present(keys) == set(), "an undecodable event must flush every key"
        car.checkpointed()  # and the stream went on past it
        output = car.listener.output()  # type: ignore[union-attr]
        assert "UNDECODABLE binlog event" in output
        info = status(car)
        assert info["undecodable_events"]["count"] >= 1
        assert not info["healthy"]
        assert any("ack-undecodable" in problem for problem in info["problems"])
        acked = car.cli("ack-undecodable")
        assert acked.returncode == 0 and "acknowledged" in acked.stdout, acked.stderr
        info = status(car)
        assert info["undecodable_events"] is None
        assert not any("ack-undecodable" in problem for problem in info["problems"])
        assert info["healthy"], info["problems"]


def status(car: Sidecar) -> dict[str, Any]:
    done = car.cli("status", "--json")
    return dict(json.loads(done.stdout))
