"""ensure_partitions against the real MariaDB: DDL, rows, locks, retries, the CLI."""

from __future__ import annotations

import calendar
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pymysql
import pytest

from core.partition_plan import Form, Month, PartitionError, current_month
from tests.services import child_env, cli, connect, service_env, unique, wait_for

NOW = datetime(2025, 10, 15, 12, 0, tzinfo=UTC)  # through now + 3 = January 2026

COLUMN_TYPES = {
    Form.YEAR_MONTH: "DATETIME",
    Form.UNIX_TIMESTAMP: "TIMESTAMP",
    Form.COLUMNS_DATE: "DATE",
    Form.COLUMNS_DATETIME: "DATETIME",
}
PARTITION_BY = {
    Form.YEAR_MONTH: "RANGE (YEAR(ts) * 100 + MONTH(ts))",
    Form.UNIX_TIMESTAMP: "RANGE (UNIX_TIMESTAMP(ts))",
    Form.COLUMNS_DATE: "RANGE COLUMNS(ts)",
    Form.COLUMNS_DATETIME: "RANGE COLUMNS(ts)",
}


def expected_bound(form: Form, month: Month) -> str:
    """PARTITION_DESCRIPTION of a partition ending where `month` starts, computed here
    independently of the planner."""
    if form is Form.YEAR_MONTH:
        return f"{month.year}{month.month:02d}"
    if form is Form.UNIX_TIMESTAMP:
        return str(calendar.timegm((month.year, month.month, 1, 0, 0, 0)))
    if form is Form.COLUMNS_DATE:
        return f"'{month.year}-{month.month:02d}-01'"
    return f"'{month.year}-{month.month:02d}-01 00:00:00'"


def expected_layout(form: Form, first: Month, last: Month) -> list[tuple[str, str]]:
    """One partition per month from `first` through `last`, then p_future."""
    layout = []
    month = first
    while month <= last:
        layout.append((month.partition_name, expected_bound(form, month + 1)))
        month += 1
    return [*layout, ("p_future", "MAXVALUE")]


# ---- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def partitions(services: dict[str, str]) -> ModuleType:
    """tasks.work.partitions, imported once the service URLs are known."""
    for name, value in services.items():
        os.environ.setdefault(name, value)
    import tasks.work.partitions

    return tasks.work.partitions


@pytest.fixture
def utc_db(db: pymysql.Connection) -> pymysql.Connection:
    with db.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
    return db


@pytest.fixture
def make_table(utc_db: pymysql.Connection) -> Callable[..., str]:
    def make(form: Form, last_month: Month | None, first_month: Month | None = None) -> str:
        """A table of `form` with one partition per month first..last, and p_future."""
        table = unique("an_")
        parts = []
        if last_month is not None:
            first = first_month or last_month
            parts = [
                f"PARTITION {name} VALUES LESS THAN ({bound})"
                for name, bound in expected_layout(form, first, last_month)[:-1]
            ]
        maxvalue = "(MAXVALUE)" if form.columns else "MAXVALUE"
        parts.append(f"PARTITION p_future VALUES LESS THAN {maxvalue}")
        execute(
            utc_db,
            f"CREATE TABLE {table} (id INT NOT NULL, ts {COLUMN_TYPES[form]} NOT NULL,"
            f" PRIMARY KEY (id, ts)) PARTITION BY {PARTITION_BY[form]} ({', '.join(parts)})",
        )
        return table

    return make


def execute(conn: pymysql.Connection, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def layout_of(conn: pymysql.Connection, database: str, table: str) -> list[tuple[str, str]]:
    return [
        (str(name), str(description))
        for name, description in execute(
            conn,
            "SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY PARTITION_ORDINAL_POSITION",
            (database, table),
        )
    ]


def ids_in(conn: pymysql.Connection, table: str, partition: str) -> set[int]:
    return {row[0] for row in execute(conn, f"SELECT id FROM {table} PARTITION ({partition})")}


@pytest.fixture
def ensure(
    partitions: ModuleType, mysql_params: dict[str, Any], database: str
) -> Callable[..., Any]:
    def run(table: str, **options: Any) -> Any:
        options.setdefault("now", NOW)
        options.setdefault("lock_wait_timeout", 2)
        return partitions.ensure_partitions(mysql_params, database, table, **options)

    return run


# ---- the forms ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", list(Form), ids=lambda form: form.name.lower())
def test_each_form_gets_exact_monthly_partitions_and_rows_move_into_them(
    form: Form,
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    utc_db: pymysql.Connection,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = make_table(form, Month(2025, 8))
    # Rows already in p_future: REORGANIZE must move each into its month's partition.
    rows = {
        1: "2025-09-01 00:00:00",
        2: "2025-10-31 23:59:59",
        3: "2025-11-15 10:00:00",
        4: "2026-01-31 12:00:00",
        5: "2026-02-01 00:00:00",  # after now + 3 months: stays in p_future
    }
    for key, value in rows.items():
        value = value[:10] if form is Form.COLUMNS_DATE else value
        execute(utc_db, f"INSERT INTO {table} VALUES (%s, %s)", (key, value))
    caplog.set_level(logging.INFO, logger="tasks.work")

    result = ensure(table, months_ahead=3)

    assert layout_of(utc_db, database, table) == expected_layout(
        form, Month(2025, 8), Month(2026, 1)
    )
    assert result.added == ("p202509", "p202510", "p202511", "p202512", "p202601")
    assert len(result.statements) == 1 and "REORGANIZE PARTITION `p_future`" in result.statements[0]
    assert ids_in(utc_db, table, "p202509") == {1}
    assert ids_in(utc_db, table, "p202510") == {2}
    assert ids_in(utc_db, table, "p202511") == {3}
    assert ids_in(utc_db, table, "p202512") == set()
    assert ids_in(utc_db, table, "p202601") == {4}
    assert ids_in(utc_db, table, "p_future") == {5}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{database}.{table}" in w and "holds 5 row(s)" in w for w in warnings), warnings

    again = ensure(table, months_ahead=3)
    assert again.statements == () and again.added == ()
    assert layout_of(utc_db, database, table) == expected_layout(
        form, Month(2025, 8), Month(2026, 1)
    )


def test_the_seed_table_gets_its_months(
    ensure: Callable[..., Any], utc_db: pymysql.Connection, database: str
) -> None:
    table = "megamind_global_element_analytics_partitioned"
    ensure(table, months_ahead=3)
    assert layout_of(utc_db, database, table) == expected_layout(
        Form.YEAR_MONTH, Month(2025, 7), Month(2026, 1)
    )


def test_a_dry_run_prints_the_ddl_and_changes_nothing(
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    utc_db: pymysql.Connection,
    database: str,
) -> None:
    table = make_table(Form.YEAR_MONTH, Month(2025, 9))
    before = layout_of(utc_db, database, table)

    result = ensure(table, months_ahead=2, dry_run=True)

    assert result.dry_run and result.added == ("p202510", "p202511", "p202512")
    assert result.statements == (
        f"ALTER TABLE `{database}`.`{table}` REORGANIZE PARTITION `p_future` INTO ("
        "PARTITION `p202510` VALUES LESS THAN (202511), "
        "PARTITION `p202511` VALUES LESS THAN (202512), "
        "PARTITION `p202512` VALUES LESS THAN (202601), "
        "PARTITION `p_future` VALUES LESS THAN MAXVALUE)",
    )
    assert layout_of(utc_db, database, table) == before
    # the printed DDL is what a real run executes
    assert ensure(table, months_ahead=2).statements == result.statements


def test_december_rolls_over_into_january(
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    utc_db: pymysql.Connection,
    database: str,
) -> None:
    table = make_table(Form.UNIX_TIMESTAMP, Month(2025, 11))
    result = ensure(table, now=datetime(2025, 12, 31, 23, 59, tzinfo=UTC), months_ahead=3)
    assert result.added == ("p202512", "p202601", "p202602", "p202603")
    assert layout_of(utc_db, database, table) == expected_layout(
        Form.UNIX_TIMESTAMP, Month(2025, 11), Month(2026, 3)
    )


def test_a_gap_of_several_months_is_filled(
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    utc_db: pymysql.Connection,
    database: str,
) -> None:
    table = make_table(Form.COLUMNS_DATETIME, Month(2025, 1))  # not run since January
    result = ensure(table, months_ahead=1)
    assert result.added == tuple(Month(2025, m).partition_name for m in range(2, 12))
    assert layout_of(utc_db, database, table) == expected_layout(
        Form.COLUMNS_DATETIME, Month(2025, 1), Month(2025, 11)
    )


def test_retention_drops_exactly_the_expired_partitions(
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    utc_db: pymysql.Connection,
    database: str,
) -> None:
    table = make_table(Form.YEAR_MONTH, Month(2025, 9), first_month=Month(2025, 1))
    execute(utc_db, f"INSERT INTO {table} VALUES (1, '2025-06-30 23:59:59'), (2, '2025-07-01')")

    # October: keep July, Aug, Sep. Six partitions, one row: only when allowed.
    result = ensure(table, months_ahead=1, retain_months=3, allow_drop_rows=True)

    assert result.dropped == tuple(Month(2025, m).partition_name for m in range(1, 7))
    assert result.doomed == (
        *((Month(2025, m).partition_name, 0) for m in range(1, 6)),
        (
            "p202506",
            1,
        ),
    )
    assert layout_of(utc_db, database, table) == expected_layout(
        Form.YEAR_MONTH, Month(2025, 7), Month(2025, 11)
    )
    assert [row[0] for row in execute(utc_db, f"SELECT id FROM {table}")] == [2]
    assert ensure(table, months_ahead=1, retain_months=3).statements == ()


def test_retention_of_rows_or_many_partitions_needs_permission(
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    utc_db: pymysql.Connection,
    database: str,
) -> None:
    """The guard: a drop of partitions holding rows, or of more than DROP_AT_ONCE, is not
    done without allow_drop_rows (the months ahead are added all the same); what it would
    drop is listed with exact row counts. A few empty ones go without asking."""
    table = make_table(Form.YEAR_MONTH, Month(2025, 9), first_month=Month(2025, 4))
    execute(utc_db, f"INSERT INTO {table} VALUES (1, '2025-04-15')")  # in p202504

    dry = ensure(table, months_ahead=1, retain_months=3, dry_run=True)
    assert dry.drop_refused and dry.dropped == ()
    assert not any("DROP PARTITION" in statement for statement in dry.statements)
    assert dry.doomed == (("p202504", 1), ("p202505", 0), ("p202506", 0))

    refused = ensure(table, months_ahead=1, retain_months=3)
    assert refused.drop_refused and refused.dropped == ()
    assert refused.added == ("p202510", "p202511")  # the months ahead are not held back
    assert refused.doomed == (("p202504", 1), ("p202505", 0), ("p202506", 0))
    assert execute(utc_db, f"SELECT id FROM {table}") == [(1,)]
    assert layout_of(utc_db, database, table)[0][0] == "p202504"

    execute(utc_db, f"DELETE FROM {table}")  # three empty ones: no permission needed
    emptied = ensure(table, months_ahead=1, retain_months=3)
    assert not emptied.drop_refused
    assert emptied.dropped == ("p202504", "p202505", "p202506")

    many = make_table(Form.YEAR_MONTH, Month(2025, 9), first_month=Month(2025, 1))
    six = ensure(many, months_ahead=1, retain_months=3)  # six empty ones: too many at once
    assert six.drop_refused and six.dropped == () and len(six.doomed) == 6


# ---- refusals -------------------------------------------------------------------------------


def test_unsupported_tables_are_refused_naming_them(
    ensure: Callable[..., Any], utc_db: pymysql.Connection, database: str
) -> None:
    execute(utc_db, "CREATE TABLE plain (id INT PRIMARY KEY)")
    execute(
        utc_db,
        "CREATE TABLE by_days (id INT NOT NULL, ts DATETIME NOT NULL, PRIMARY KEY (id, ts))"
        " PARTITION BY RANGE (TO_DAYS(ts)) (PARTITION p0 VALUES LESS THAN (739000),"
        " PARTITION p_future VALUES LESS THAN MAXVALUE)",
    )
    execute(
        utc_db,
        "CREATE TABLE no_max (id INT NOT NULL, ts DATE NOT NULL, PRIMARY KEY (id, ts))"
        " PARTITION BY RANGE COLUMNS(ts) (PARTITION p202507 VALUES LESS THAN ('2025-08-01'))",
    )
    for table, found in [
        ("plain", "is not partitioned"),
        ("by_days", "to_days"),
        ("no_max", "no MAXVALUE partition"),
        ("missing", "does not exist"),
    ]:
        with pytest.raises(PartitionError) as caught:
            ensure(table)
        assert f"{database}.{table}" in str(caught.value) and found in str(caught.value)


# ---- one run at a time ----------------------------------------------------------------------


def _waiting_on(admin: pymysql.Connection, lock: str) -> int:
    (count,) = execute(
        admin,
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
        " WHERE STATE = 'User lock' AND INFO LIKE %s",
        (f"%GET_LOCK%{lock}%",),
    )[0]
    return int(count)


def test_two_concurrent_runs_end_as_one_run(
    partitions: ModuleType,
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    admin: pymysql.Connection,
    mysql_params: dict[str, Any],
    utc_db: pymysql.Connection,
    database: str,
) -> None:
    table = make_table(Form.COLUMNS_DATE, Month(2025, 8))
    lock = partitions.run_lock_name(f"{database}.{table}")
    holder = connect(mysql_params)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(ensure(table, months_ahead=3))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    # Hold the run lock so both runs are certainly queued on it at once, then let them go.
    assert execute(holder, "SELECT GET_LOCK(%s, 5)", (lock,)) == [(1,)]
    threads = [threading.Thread(target=run) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: _waiting_on(admin, lock) == 2, timeout=20, what="both runs queued")
    finally:
        execute(holder, "SELECT RELEASE_LOCK(%s)", (lock,))
        holder.close()
        for thread in threads:
            thread.join(60)

    assert not errors, errors
    assert sorted(len(r.added) for r in results) == [0, 5]  # the second found nothing to do
    assert layout_of(utc_db, database, table) == expected_layout(
        Form.COLUMNS_DATE, Month(2025, 8), Month(2026, 1)
    )


def test_a_run_that_cannot_get_the_run_lock_skips(
    partitions: ModuleType,
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    mysql_params: dict[str, Any],
    utc_db: pymysql.Connection,
    database: str,
) -> None:
    table = make_table(Form.YEAR_MONTH, Month(2025, 8))
    before = layout_of(utc_db, database, table)
    holder = connect(mysql_params)
    try:
        execute(
            holder, "SELECT GET_LOCK(%s, 5)", (partitions.run_lock_name(f"{database}.{table}"),)
        )
        result = ensure(table, run_lock_timeout=0.2)
    finally:
        holder.close()
    assert result.skipped and result.statements == ()
    assert layout_of(utc_db, database, table) == before


# ---- metadata locks -------------------------------------------------------------------------


@pytest.fixture
def open_transaction(
    mysql_params: dict[str, Any], database: str
) -> Iterator[Callable[[str], pymysql.Connection]]:
    """A session whose open transaction has read a table: it holds the table's metadata lock."""
    sessions: list[pymysql.Connection] = []

    def begin(table: str) -> pymysql.Connection:
        conn = connect(mysql_params, database)
        sessions.append(conn)
        execute(conn, "START TRANSACTION")
        execute(conn, f"SELECT * FROM {table}")
        return conn

    yield begin
    for conn in sessions:
        conn.close()


def test_a_held_metadata_lock_is_retried_then_reported(
    partitions: ModuleType,
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    open_transaction: Callable[[str], pymysql.Connection],
    utc_db: pymysql.Connection,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = make_table(Form.YEAR_MONTH, Month(2025, 8))
    before = layout_of(utc_db, database, table)
    blocker = open_transaction(table)
    caplog.set_level(logging.INFO, logger="tasks.work")

    with pytest.raises(partitions.MetadataLockTimeout) as caught:
        ensure(table, lock_wait_timeout=1, attempts=2)

    message = str(caught.value)
    assert f"{database}.{table}" in message and "metadata lock" in message
    assert "gave up after 2 attempt(s)" in message
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 1 and f"{database}.{table}" in retries[0]
    assert layout_of(utc_db, database, table) == before

    execute(blocker, "ROLLBACK")
    assert ensure(table, lock_wait_timeout=1, attempts=2).added  # free again: it runs


def test_a_metadata_lock_released_between_attempts_lets_the_run_finish(
    make_table: Callable[..., str],
    ensure: Callable[..., Any],
    open_transaction: Callable[[str], pymysql.Connection],
    utc_db: pymysql.Connection,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = make_table(Form.COLUMNS_DATE, Month(2025, 8))
    blocker = open_transaction(table)
    caplog.set_level(logging.INFO, logger="tasks.work")
    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.append(ensure(table, lock_wait_timeout=1, attempts=5))
    )
    worker.start()
    try:
        wait_for(
            lambda: any("retrying" in r.getMessage() for r in caplog.records),
            timeout=20,
            what="a retry after a lock wait timeout",
        )
    finally:
        execute(blocker, "COMMIT")
        worker.join(60)

    assert results and results[0].attempts >= 2
    assert layout_of(utc_db, database, table) == expected_layout(
        Form.COLUMNS_DATE, Month(2025, 8), Month(2026, 1)
    )


# ---- listing, the task, the CLI -------------------------------------------------------------


def test_list_partitions_shows_ranges_and_estimates(
    partitions: ModuleType, mysql_params: dict[str, Any], database: str
) -> None:
    listing = partitions.list_partitions(
        mysql_params, database, "megamind_global_element_analytics_partitioned"
    )
    assert listing.problem is None and listing.form == Form.YEAR_MONTH.value
    assert [(p.name, p.holds, p.bound) for p in listing.partitions] == [
        ("p202507", "before 2025-08-01", "202508"),
        ("p202508", "2025-08-01 .. 2025-09-01", "202509"),
        ("p202509", "2025-09-01 .. 2025-10-01", "202510"),
        ("p_future", "from 2025-10-01 on", "MAXVALUE"),
    ]
    assert all(p.rows >= 0 for p in listing.partitions)


def test_the_celery_task_is_registered_under_its_stable_name(partitions: ModuleType) -> None:
    from adapters.broker import ENSURE_PARTITIONS_TASK
    from tasks.app import app

    task = app.tasks[ENSURE_PARTITIONS_TASK]
    assert task.name == ENSURE_PARTITIONS_TASK
    assert partitions.DatabaseUnavailable in task.autoretry_for
    assert partitions.MetadataLockTimeout not in task.autoretry_for


def test_an_unreachable_server_is_reported_as_unavailable(
    partitions: ModuleType, mysql_params: dict[str, Any]
) -> None:
    closed = dict(mysql_params, port=1, connect_timeout=2)
    with pytest.raises(partitions.DatabaseUnavailable, match=r"db1\.analytics"):
        partitions.ensure_partitions(closed, "db1", "analytics", now=NOW)


@pytest.fixture
def cli_env(services: dict[str, str], database: str) -> dict[str, str]:
    parts = urlsplit(service_env()["PRIMER_MYSQL_URL"])
    url = f"mysql://root:@{parts.hostname}:{parts.port}/{database}"
    return child_env(services, PRIMER_MYSQL_URL=url)


def test_cli_refuses_bad_arguments_with_exit_2(cli_env: dict[str, str]) -> None:
    for args in (["--months-ahead", "-1"], ["--retain-months", "0"], ["--months-ahead", "x"]):
        done = cli(cli_env, "partitions", "ensure", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert args[0] in done.stderr


def test_cli_dry_run_then_run_then_list(
    cli_env: dict[str, str], utc_db: pymysql.Connection, database: str
) -> None:
    table = "megamind_global_element_analytics_partitioned"
    before = layout_of(utc_db, database, table)

    dry = cli(cli_env, "partitions", "ensure", "--dry-run", "--months-ahead", "1")
    assert dry.returncode == 0, dry.stderr
    assert (
        f"ALTER TABLE `{database}`.`{table}` REORGANIZE PARTITION `p_future` INTO (" in dry.stdout
    )
    assert layout_of(utc_db, database, table) == before

    last = current_month(datetime.now(UTC)) + 1
    done = cli(cli_env, "partitions", "ensure", "--months-ahead", "1")
    assert done.returncode == 0, done.stderr
    assert "added p202510," in done.stdout and last.partition_name in done.stdout
    assert layout_of(utc_db, database, table)[-2][0] == last.partition_name

    listed = cli(cli_env, "partitions", "list")
    assert listed.returncode == 0, listed.stderr
    assert "p_future" in listed.stdout and f"{last.partition_name} " in listed.stdout


def test_cli_retention_guard_lists_what_it_would_drop(
    cli_env: dict[str, str], utc_db: pymysql.Connection, database: str
) -> None:
    table = "megamind_global_element_analytics_partitioned"
    first = layout_of(utc_db, database, table)[0][0]
    execute(
        utc_db,
        f"INSERT INTO {table} (analytics_id, element_id, access_timestamp)"
        " VALUES ('a1', 'e1', '2025-07-15')",
    )
    done = cli(cli_env, "partitions", "ensure", "--retain-months", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"-- {first}: 1 row(s)" in done.stdout, done.stdout  # listed, with its rows
    assert "retention not done" in done.stderr and "--allow-drop-rows" in done.stderr
    assert layout_of(utc_db, database, table)[0][0] == first  # nothing dropped
    assert execute(utc_db, f"SELECT COUNT(*) FROM {table}") == [(1,)]

    allowed = cli(cli_env, "partitions", "ensure", "--retain-months", "1", "--allow-drop-rows")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert f"dropped {first}" in allowed.stdout
    assert execute(utc_db, f"SELECT COUNT(*) FROM {table}") == [(0,)]
