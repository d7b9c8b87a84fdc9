"""End to end against real MariaDB (binlog), Redis and a Celery worker: a change in the
database removes exactly the cached keys it could have altered."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pymysql
import pytest
import redis

from config.query import Query
from core.keys import KeyFilter
from core.predicate import ElementImage, matches
from tests.sidecar import Sidecar, isolated
from tests.workload import CATEGORIES, LEVELS, random_query


@pytest.fixture(scope="module")
def sidecar(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sidecar]:
    workdir = tmp_path_factory.mktemp("sidecar")
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


# ---- the seed's gaps, by name ------------------------------------------------------------------


def test_all_categories_keys(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("allcats", "security", "0.90", "required")
    check(
        sidecar,
        [q(thr=0.5), q("security")],
        [q("development"), q(thr=0.95)],
        "UPDATE megamind_chunks SET content = 'new' WHERE chunk_id = 'allcats'",
    )


def test_all_enforcement_keys(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("alllevels", "process", "0.90", "required")
    check(
        sidecar,
        [q("process", level="all"), q("process", level="required")],
        [q("process", level="optional"), q("process", level="recommended")],
        "UPDATE megamind_chunks SET content = 'new' WHERE chunk_id = 'alllevels'",
    )


def test_priority_crossing_up(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("prio-up", "development", "0.50", "recommended")
    check(
        sidecar,
        [q("development", thr=0.8)],
        [q("development", thr=0.95)],
        "UPDATE megamind_chunks SET priority_score = 0.90 WHERE chunk_id = 'prio-up'",
    )


def test_priority_crossing_down(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("prio-down", "development", "0.90", "recommended")
    check(
        sidecar,
        [q("development", thr=0.8), q("development", thr=0.4)],
        [q("development", thr=0.95)],
        "UPDATE megamind_chunks SET priority_score = 0.50 WHERE chunk_id = 'prio-down'",
    )


def test_category_move_hits_old_and_new(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("mover", "security", "0.70", "required")
    check(
        sidecar,
        [q("security"), q("process"), q("process", "testing")],
        [q("development"), q("testing")],
        "UPDATE megamind_chunks SET element_category = 'process' WHERE chunk_id = 'mover'",
    )


def test_realm_move_out_and_in(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("realm-out", "testing", "0.70", "optional")
    check(
        sidecar,
        [q("testing")],
        [q("security")],
        "UPDATE megamind_chunks SET realm_id = 'PROJECT' WHERE chunk_id = 'realm-out'",
    )
    check(
        sidecar,
        [q("testing")],
        [q("security")],
        "UPDATE megamind_chunks SET realm_id = 'GLOBAL' WHERE chunk_id = 'realm-out'",
    )


def test_changes_outside_global_affect_nothing(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("project-only", "security", "0.90", "required", realm="PROJECT")
    check(
        sidecar,
        [],
        [q("security"), q(thr=0.5)],
        "UPDATE megamind_chunks SET content = 'x', priority_score = 0.99 "
        "WHERE chunk_id = 'project-only'",
    )


def test_title_and_summary_edits(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("titled", "security", "0.80", "required", title="Use TLS")
    check(
        sidecar,
        [q("security")],
        [q("development")],
        "UPDATE megamind_global_elements SET title = 'Use mTLS' WHERE chunk_id = 'titled'",
    )
    check(
        sidecar,
        [q("security", level="required")],
        [q("security", level="optional")],
        "UPDATE megamind_global_elements SET summary = 'new' WHERE chunk_id = 'titled'",
    )


def test_global_element_without_category(sidecar: Sidecar) -> None:
    check(
        sidecar,
        [q(thr=0.5)],
        [q("security"), q("development")],
        "INSERT INTO megamind_chunks (chunk_id, realm_id, content, element_category, "
        "priority_score) VALUES ('nocat', 'GLOBAL', 'x', NULL, 0.60)",
    )


def test_read_bumps_remove_nothing(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("popular", "security", "0.80", "required", title="Popular")
    check(
        sidecar,
        [],
        [q("security"), q(thr=0.5)],
        "UPDATE megamind_chunks SET access_count = access_count + 1, last_accessed = NOW() "
        "WHERE chunk_id = 'popular'",
    )
    check(
        sidecar,
        [],
        [q("security")],
        "UPDATE megamind_global_elements SET access_count = access_count + 1, "
        "last_accessed = NOW() WHERE chunk_id = 'popular'",
    )


def test_delete_with_cascading_metadata(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("doomed", "process", "0.90", "required", title="Doomed")
    check(
        sidecar,
        [q("process"), q(thr=0.5)],
        [q("security")],
        "DELETE FROM megamind_chunks WHERE chunk_id = 'doomed'",
    )
    with sidecar.conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM megamind_global_elements WHERE chunk_id = 'doomed'")
        assert cur.fetchone()[0] == 0  # gone by ON DELETE CASCADE, with no row event


def test_category_containing_underscore(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("underscored", "cyber_security", "0.90", "required")
    check(
        sidecar,
        [q("cyber_security"), q("cyber_security", "process"), q("cyber", "security")],
        [q("security"), q("cyber"), q("cybersecurity")],
        "UPDATE megamind_chunks SET content = 'x' WHERE chunk_id = 'underscored'",
    )


def test_multi_row_transaction(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("tx1", "security", "0.90", "required")
    sidecar.insert_chunk("tx2", "development", "0.90", "required")
    sidecar.sync()
    keys = sidecar.plant(q("security"), q("development"), q("process"))
    sidecar.conn.begin()
    sidecar.execute("UPDATE megamind_chunks SET content = 'a' WHERE chunk_id = 'tx1'")
    sidecar.execute("UPDATE megamind_chunks SET content = 'b' WHERE chunk_id = 'tx2'")
    sidecar.conn.commit()
    sidecar.sync()
    assert sidecar.present(keys) == {keys[2]}


# ---- random changes against a brute-force model ------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_random_changes_delete_exactly_the_affected_keys(sidecar: Sidecar, seed: int) -> None:
    rng = random.Random(seed)
    car = sidecar
    ids = [f"r{seed}-{i}" for i in range(40)]
    for chunk_id in ids:
        car.insert_chunk(
            chunk_id,
            rng.choice(CATEGORIES),
            f"{rng.randint(0, 100) / 100:.2f}",
            rng.choice(LEVELS),
            rng.choice(["GLOBAL"] * 4 + ["PROJECT"]),
            title=f"T {chunk_id}" if rng.random() < 0.5 else None,
        )
    images: list[ElementImage] = [car.sync()]
    queries = list({random_query(rng) for _ in range(400)})
    keys = car.plant(*queries)
    live, created = list(ids), 0

    def record(chunk_id: str) -> None:
        image = car.image(chunk_id)
        if image is not None:
            images.append(image)

    for _ in range(40):
        op = rng.choice(
            [
                "create",
                "category",
                "priority",
                "level",
                "content",
                "realm",
                "delete",
                "title",
                "bump",
                "bump",
            ]
        )
        target = rng.choice(live)
        column_value = {
            "category": ("element_category", rng.choice(CATEGORIES)),
            "priority": ("priority_score", f"{rng.randint(0, 100) / 100:.2f}"),
            "level": ("enforcement_level", rng.choice(LEVELS)),
            "content": ("content", f"content {rng.random()}"),
            "realm": ("realm_id", rng.choice(["GLOBAL", "PROJECT"])),
        }
        if op == "create":
            created += 1
            new_id = f"r{seed}-new{created}"
            car.insert_chunk(new_id, rng.choice(CATEGORIES), "0.75", rng.choice(LEVELS))
            live.append(new_id)
            record(new_id)
        elif op in column_value:
            column, value = column_value[op]
            before = car.image(target)
            # An UPDATE to the values a row already has changes nothing and writes no row
            # event: the model counts only the changes the binlog carries.
            if car.execute(
                f"UPDATE megamind_chunks SET {column} = %s WHERE chunk_id = %s", (value, target)
            ):
                images.extend(image for image in (before, car.image(target)) if image)
        elif op == "delete":
            record(target)
            car.execute("DELETE FROM megamind_chunks WHERE chunk_id = %s", (target,))
            live.remove(target)
        elif op == "title":
            if car.execute(  # a chunk without metadata has no row to change
                "UPDATE megamind_global_elements SET title = %s WHERE chunk_id = %s",
                (f"title {rng.random()}", target),
            ):
                record(target)
        else:  # the primer server's read bump: affects nothing
            car.execute(
                "UPDATE megamind_chunks SET access_count = access_count + 1, "
                "last_accessed = NOW() WHERE chunk_id = %s",
                (target,),
            )
    images.append(car.sync())

    def affected(query: Query) -> bool:
        key = KeyFilter.of(query)
        return any(matches(image, key) for image in images)

    expected_gone = {k for k, query in zip(keys, queries, strict=True) if affected(query)}
    present = car.present(keys)
    assert not (present & expected_gone), f"{len(present & expected_gone)} affected keys survived"
    assert present == set(keys) - expected_gone, "unaffected keys were deleted"
    assert 0 < len(expected_gone) < len(keys)  # the run exercised both sides


# ---- restart, operators ------------------------------------------------------------------------


def test_listener_killed_resumes_from_its_checkpoint(sidecar: Sidecar) -> None:
    sidecar.insert_chunk("while-down", "testing", "0.90", "required")
    sidecar.sync()
    sidecar.checkpointed()  # else the restart replays older batches too (at least once)
    keys = sidecar.plant(q("testing"), q("security"))
    sidecar.kill_listener()
    sidecar.execute(
        "UPDATE megamind_chunks SET content = 'changed while down' WHERE chunk_id = 'while-down'"
    )
    sidecar.start_listener()
    sidecar.sync(timeout=60)
    assert sidecar.present(keys) == {keys[1]}


def test_operator_invalidate_category_is_literal(sidecar: Sidecar) -> None:
    from tests.services import cli

    sidecar.sync()
    star, other, allcats, glob = sidecar.plant(q("*"), q("security"), q(thr=0.5), q("x*y"))
    dry = cli(sidecar.env, "invalidate", "--category", "*", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert star in dry.stdout and other not in dry.stdout and glob not in dry.stdout
    assert sidecar.present([star, other, allcats, glob]) == {star, other, allcats, glob}
    done = cli(sidecar.env, "invalidate", "--category", "*")
    assert done.returncode == 0, done.stderr
    assert sidecar.present([star, other, allcats, glob]) == {other, allcats, glob}


def test_operator_invalidate_element_and_all(sidecar: Sidecar) -> None:
    from tests.services import cli

    sidecar.insert_chunk("op-el", "process", "0.90", "required", title="Op")
    sidecar.sync()
    keys = sidecar.plant(q("process"), q("security"))
    done = cli(sidecar.env, "invalidate", "--element", "ge_op-el")
    assert done.returncode == 0, done.stderr
    assert sidecar.present(keys) == {keys[1]}
    missing = cli(sidecar.env, "invalidate", "--element", "no-such-element")
    assert missing.returncode == 1 and "'no-such-element'" in missing.stderr
    assert cli(sidecar.env, "invalidate", "--all").returncode == 0
    assert sidecar.present(keys) == set()


def test_status_reports_checkpoint_and_queues(sidecar: Sidecar) -> None:
    import json

    from tests.services import cli

    # status is healthy (exit 0) only with a month of partitions ahead: schema.sql's are old.
    assert cli(sidecar.env, "partitions", "ensure").returncode == 0
    sidecar.sync()
    done = cli(sidecar.env, "status", "--json")
    info = json.loads(done.stdout)
    assert done.returncode == 0, info["problems"]
    assert info["healthy"] and info["lag_seconds"] is not None
    assert info["checkpoint"]["gtid"].startswith("0-1-")
    assert info["leader"]
    assert info["seconds_since_last_event"] is not None
    assert set(info["queues"]) == {
        f"{sidecar.tag}.invalidate",
        f"{sidecar.tag}.warm",
        f"{sidecar.tag}.maintenance",
    }


def test_standby_replica_takes_over(sidecar: Sidecar) -> None:
    from tests.services import wait_for

    first = sidecar.listener
    assert first is not None
    second = sidecar.start_listener_standby()
    try:
        wait_for(lambda: "waiting" in second.output(), timeout=30, what="standby to wait")
        first.stop()  # warm stop releases the lock; the standby takes over
        sidecar.listener = second
        wait_for(lambda: "streaming from" in second.output(), timeout=30, what="takeover")
        sidecar.insert_chunk("after-takeover", "security", "0.90", "required")
        keys = sidecar.plant(q("security"))
        sidecar.execute(
            "UPDATE megamind_chunks SET content = 'x' WHERE chunk_id = 'after-takeover'"
        )
        sidecar.sync()
        assert sidecar.present(keys) == set()
    finally:
        if sidecar.listener is not second:
            second.stop()


def test_refuses_a_server_without_full_row_metadata(
    sidecar: Sidecar, admin: pymysql.Connection
) -> None:
    from tests.services import cli

    with admin.cursor() as cur:
        cur.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        done = cli({**sidecar.env, "PRIMER_SERVER_ID": "4242"}, "listen", timeout=60)
    finally:
        with admin.cursor() as cur:
            cur.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
    assert done.returncode == 2, done.stderr
    assert "binlog_row_metadata is 'MINIMAL', needs FULL" in done.stderr


def test_ddl_on_a_watched_table_flushes_every_key(sidecar: Sidecar) -> None:
    sidecar.sync()
    keys = sidecar.plant(q("security"), q("development", thr=0.9), q(thr=0.5))
    sidecar.execute("ALTER TABLE megamind_chunks COMMENT = 'primer chunks'")
    sidecar.sync()
    assert sidecar.present(keys) == set()
    assert "DDL on a watched table" in sidecar.listener.output()  # type: ignore[union-attr]


def test_listener_serves_prometheus_metrics(sidecar: Sidecar) -> None:
    import socket
    import urllib.request

    from tests.services import wait_for

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sidecar.kill_listener()
    sidecar.start_listener(metrics_port=port)
    sidecar.sync()

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    def published_batches() -> float:
        for line in scrape().splitlines():
            if line.startswith("primer_cache_listener_batches_published_total "):
                return float(line.split()[1])
        return 0.0

    wait_for(lambda: published_batches() >= 1, timeout=20, what="a published batch counted")
    text = scrape()
    assert "primer_cache_listener_is_leader 1.0" in text
    assert "primer_cache_listener_transactions_total" in text


def test_noblob_row_images(sidecar: Sidecar) -> None:
    # binlog_row_image=NOBLOB leaves unchanged TEXT/JSON columns (content, embedding) out.
    sidecar.insert_chunk("noblob", "security", "0.50", "required", title="No blob")
    sidecar.sync()
    keys = sidecar.plant(q("security", thr=0.8), q("process"), q("security", thr=0.3))
    sidecar.execute("SET SESSION binlog_row_image = 'NOBLOB'")
    try:
        sidecar.execute(
            "UPDATE megamind_chunks SET access_count = access_count + 1 WHERE chunk_id = 'noblob'"
        )
        sidecar.sync()
        assert sidecar.present(keys) == set(keys), "a read bump under NOBLOB deleted keys"
        sidecar.execute(
            "UPDATE megamind_chunks SET priority_score = 0.90 WHERE chunk_id = 'noblob'"
        )
        sidecar.sync()
    finally:
        sidecar.execute("SET SESSION binlog_row_image = 'FULL'")
    assert sidecar.present(keys) == {keys[1]}


def test_listener_survives_a_killed_binlog_connection(
    sidecar: Sidecar, admin: pymysql.Connection
) -> None:
    from tests.services import wait_for

    sidecar.insert_chunk("reconnect", "testing", "0.90", "required")
    sidecar.sync()

    def dump_threads() -> list[int]:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
            )
            return [row[0] for row in cur.fetchall()]

    killed = dump_threads()
    assert killed, "no binlog dump thread to kill"
    with admin.cursor() as cur:
        for thread_id in killed:
            cur.execute(f"KILL {int(thread_id)}")
    keys = sidecar.plant(q("testing"), q("security"))
    sidecar.execute(
        "UPDATE megamind_chunks SET content = 'after kill' WHERE chunk_id = 'reconnect'"
    )
    sidecar.sync(timeout=60)
    assert sidecar.present(keys) == {keys[1]}
    wait_for(lambda: set(dump_threads()) - set(killed), timeout=30, what="a new dump thread")
    assert sidecar.listener is not None and sidecar.listener.alive()


def test_ensure_partitions_runs_through_celery(sidecar: Sidecar, admin: pymysql.Connection) -> None:
    import subprocess

    from tests.services import VENV_BIN, wait_for

    table = "megamind_global_element_analytics_partitioned"

    def partitions() -> list[str]:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT PARTITION_NAME FROM information_schema.PARTITIONS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY PARTITION_ORDINAL_POSITION",
                (sidecar.database, table),
            )
            return [row[0] for row in cur.fetchall()]

    assert partitions()[-1] == "p_future"
    sent = subprocess.run(
        [
            str(VENV_BIN / "celery"),
            "-A",
            "tasks",
            "call",
            "primer_cache.ensure_partitions",
            "--queue",
            f"{sidecar.tag}.maintenance",
        ],
        env=sidecar.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    from datetime import UTC, datetime

    this_month = datetime.now(UTC).strftime("p%Y%m")
    wait_for(lambda: this_month in partitions(), timeout=60, what=f"{this_month} created")
    assert partitions()[-1] == "p_future"
