"""Issue 22's seams, reproduced end to end: real MariaDB (binlog), Redis, a Celery worker and
a listener (subprocesses), each sequence the way it broke the promise before its fix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from config.query import Query
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
