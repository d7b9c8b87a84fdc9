"""`ensure_partitions`: keep monthly partitions of the analytics table ahead of time (DESIGN §4).

The planning is pure (core.partition_plan); this module reads the partitioning from
information_schema and runs the plan:

- `time_zone='+00:00'`, so nothing the session evaluates depends on the server's zone;
- one run at a time per table via GET_LOCK: a second run (a second beat, an operator's CLI run)
  waits, then re-reads the table and finds nothing left to do;
- a small `lock_wait_timeout`: an ALTER waiting for a metadata lock blocks every new query on
  the table behind it, so it gives up soon and retries (tenacity) instead of stalling the
  primer server's writes for the default year.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pymysql
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from config import MySQLSettings, PartitionSettings, Settings
from core.partition_plan import (
    UNKNOWN_ROWS,
    Layout,
    Month,
    PartitionError,
    Partitioning,
    PartitionRow,
    Plan,
    describe,
    drop_needs_permission,
    headroom_months,
    plan,
    understand,
)
from tasks import metrics
from tasks.app import ENSURE_PARTITIONS_TASK, app, settings

log = logging.getLogger(__name__)

LOCK_WAIT_TIMEOUT_ERROR = 1205
# Can't connect, server gone away, lost connection during query: worth retrying later.
CONNECTION_ERRORS = frozenset({2003, 2006, 2013})
RUN_LOCK_PREFIX = "primer-cache:partitions:"
RUN_LOCK_TIMEOUT = 120.0  # seconds a run waits for another run of the same table to finish
MAX_LOCK_NAME = 64  # MySQL refuses longer GET_LOCK names


class MetadataLockTimeout(PartitionError):
    """Raised when every attempt's DDL waited `lock_wait_timeout` for the table's metadata lock:
    another session keeps a transaction open on the table."""


class DatabaseUnavailable(Exception):
    """Raised when MySQL cannot be reached or the connection dropped (errors 2003/2006/2013);
    the Celery task retries on it, later."""


@dataclass(frozen=True)
class Result:
    """What one run did (or, in a dry run, would do). JSON-serialisable via `to_json`."""

    table: str  # database.table
    statements: tuple[str, ...]  # the DDL run (dry run: the DDL it would run)
    added: tuple[str, ...]
    dropped: tuple[str, ...]
    through: str  # every month through this one has its own partition (YYYY-MM)
    future_rows: int  # rows in the MAXVALUE partition before the run
    dry_run: bool = False
    attempts: int = 1
    skipped: bool = False  # another run held the run lock for the whole wait
    # (partition, rows) retention would drop: dropped, or (dry run) to be dropped, or, with
    # drop_refused, kept for want of allow_drop_rows
    doomed: tuple[tuple[str, int], ...] = ()
    drop_refused: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "statements": list(self.statements),
            "added": list(self.added),
            "dropped": list(self.dropped),
            "through": self.through,
            "future_rows": self.future_rows,
            "dry_run": self.dry_run,
            "attempts": self.attempts,
            "skipped": self.skipped,
            "doomed": [{"partition": name, "rows": rows} for name, rows in self.doomed],
            "drop_refused": self.drop_refused,
        }


@dataclass(frozen=True)
class ListedPartition:
    name: str
    holds: str  # the range of values, as an operator reads it
    bound: str  # VALUES LESS THAN, as information_schema shows it
    rows: int  # information_schema's estimate


@dataclass(frozen=True)
class Listing:
    table: str
    form: str | None  # None when the partitioning is not a supported form
    partitions: list[ListedPartition] = field(default_factory=list)
    problem: str | None = None


ConnectionTarget = MySQLSettings | Mapping[str, Any]


# ---- reading ----------------------------------------------------------------------------------


def read_partitioning(conn: pymysql.Connection, database: str, table: str) -> Partitioning:
    """The table's partitioning as information_schema shows it."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT PARTITION_NAME, SUBPARTITION_NAME, PARTITION_METHOD, PARTITION_EXPRESSION,"
            " PARTITION_DESCRIPTION, TABLE_ROWS FROM information_schema.PARTITIONS"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
            " ORDER BY PARTITION_ORDINAL_POSITION, SUBPARTITION_ORDINAL_POSITION",
            (database, table),
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (database, table),
        )
        columns = {str(name): str(kind).lower() for name, kind in cur.fetchall()}
    if not rows:
        raise PartitionError(f"table {database + '.' + table!r} does not exist")
    method, expression = rows[0][2], rows[0][3]
    partitions = tuple(
        PartitionRow(name, description, int(count or 0), sub)
        for name, sub, _, _, description, count in rows
        if name is not None
    )
    return Partitioning(table, method, expression, partitions, columns, database)


def _future_rows(conn: pymysql.Connection, layout: Layout) -> int:
    return _rows(conn, layout, layout.future)


def _rows(conn: pymysql.Connection, layout: Layout, partition: str) -> int:
    # Exact, not TABLE_ROWS: InnoDB's estimate is often 0 for a partition just written to.
    with conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {_quoted_table(layout)} PARTITION ({_quote(partition)})")
        (count,) = cur.fetchone()
    return int(count)


# ---- running ----------------------------------------------------------------------------------


def ensure_partitions(
    target: ConnectionTarget,
    database: str,
    table: str,
    *,
    now: datetime | None = None,
    months_ahead: int = 3,
    retain_months: int | None = None,
    dry_run: bool = False,
    lock_wait_timeout: int = 5,
    attempts: int = 5,
    run_lock_timeout: float = RUN_LOCK_TIMEOUT,
    allow_drop_rows: bool = False,
) -> Result:
    """Give every month through now + `months_ahead` its own partition; with `retain_months`,
    drop partitions wholly before now - `retain_months`. Idempotent; `dry_run` changes nothing.
    Without `allow_drop_rows`, a drop of partitions holding rows or of more than DROP_AT_ONCE
    is not done (the months ahead are): the Result lists them, with drop_refused.

    Raises PartitionError (unsupported partitioning, MetadataLockTimeout) or
    DatabaseUnavailable; `target` is a MySQLSettings or pymysql.connect keyword arguments.
    """
    name = f"{database}.{table}"
    now = now or datetime.now(UTC)
    try:
        conn = _connect(target, database, lock_wait_timeout)
        try:
            if dry_run:
                return _dry_run(
                    conn, database, table, now, months_ahead, retain_months, allow_drop_rows
                )
            with _run_lock(conn, name, run_lock_timeout) as acquired:
                if not acquired:
                    log.warning(
                        "partitions of %s: another run held the run lock for %.0f s; skipped",
                        name,
                        run_lock_timeout,
                    )
                    return Result(name, (), (), (), "", 0, skipped=True)
                return _apply(
                    conn,
                    database,
                    table,
                    now,
                    months_ahead,
                    retain_months,
                    attempts,
                    name,
                    allow_drop_rows,
                )
        finally:
            conn.close()
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] in CONNECTION_ERRORS:
            raise DatabaseUnavailable(
                f"partitions of {name}: MySQL unreachable or connection lost: {exc.args[-1]}"
            ) from exc
        raise


def ensure_from_settings(
    config: Settings,
    *,
    now: datetime | None = None,
    months_ahead: int | None = None,
    retain_months: int | None = None,
    dry_run: bool = False,
    allow_drop_rows: bool | None = None,
) -> Result:
    """`ensure_partitions` for the configured table, with `[partitions]` settings as defaults."""
    policy: PartitionSettings = config.partitions
    return ensure_partitions(
        config.mysql,
        config.mysql.database,
        policy.table,
        now=now,
        months_ahead=policy.months_ahead if months_ahead is None else months_ahead,
        retain_months=policy.retain_months if retain_months is None else retain_months,
        dry_run=dry_run,
        lock_wait_timeout=policy.lock_wait_timeout,
        attempts=policy.attempts,
        allow_drop_rows=policy.allow_drop_rows if allow_drop_rows is None else allow_drop_rows,
    )


def list_partitions(target: ConnectionTarget, database: str, table: str) -> Listing:
    """Every partition of the table with the range it holds and its row estimate."""
    name = f"{database}.{table}"
    try:
        conn = _connect(target, database, None)
    except pymysql.err.OperationalError as exc:
        raise DatabaseUnavailable(f"partitions of {name}: cannot connect: {exc.args[-1]}") from exc
    try:
        partitioning = read_partitioning(conn, database, table)
    finally:
        conn.close()
    rows = {row.name: row for row in partitioning.partitions}
    try:
        layout = understand(partitioning)
    except PartitionError as exc:
        raw = [
            ListedPartition(row.name or "", "?", row.description or "", row.rows)
            for row in partitioning.partitions
        ]
        return Listing(name, None, raw, str(exc))
    listed = [
        ListedPartition(part, holds, rows[part].description or "", rows[part].rows)
        for part, holds in describe(layout)
    ]
    return Listing(name, layout.form.value, listed)


def _connect(
    target: ConnectionTarget, database: str, lock_wait_timeout: int | None
) -> pymysql.Connection:
    params = dict(target.connect_kwargs() if isinstance(target, MySQLSettings) else target)
    params.setdefault("connect_timeout", 10)
    conn = pymysql.connect(database=database, autocommit=True, **params)
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        if lock_wait_timeout is not None:
            cur.execute("SET SESSION lock_wait_timeout = %s", (int(lock_wait_timeout),))
    return conn


@contextmanager
def _run_lock(conn: pymysql.Connection, name: str, timeout: float) -> Iterator[bool]:
    """GET_LOCK for the table; yields whether it was acquired. Session-scoped, so a run that
    dies loses it with its connection."""
    lock = run_lock_name(name)
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (lock, timeout))
        (acquired,) = cur.fetchone()
    try:
        yield acquired == 1
    finally:
        if acquired == 1:
            with conn.cursor() as cur:
                cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))


def run_lock_name(name: str) -> str:
    """The GET_LOCK name serialising runs for `database.table`."""
    lock = RUN_LOCK_PREFIX + name
    if len(lock) <= MAX_LOCK_NAME:
        return lock
    digest = hashlib.sha1(name.encode()).hexdigest()
    return RUN_LOCK_PREFIX + digest[: MAX_LOCK_NAME - len(RUN_LOCK_PREFIX)]


def _plan(
    conn: pymysql.Connection,
    database: str,
    table: str,
    now: datetime,
    months_ahead: int,
    retain_months: int | None,
) -> tuple[Plan, int]:
    layout = understand(read_partitioning(conn, database, table))
    return plan(layout, now, months_ahead, retain_months), _future_rows(conn, layout)


def _doomed(
    conn: pymysql.Connection, planned: Plan, future_rows: int | None = None
) -> tuple[tuple[str, int], ...]:
    """(partition, exact rows) for each partition the plan drops. A partition the same plan
    adds (a run catching up) does not exist before the reorganize (`future_rows` given: the
    MAXVALUE partition's rows, where its rows are now): none when that holds none, else
    UNKNOWN_ROWS, which the guard takes for rows."""
    new = {p.name for p in planned.add} if future_rows is not None else set()
    unknown = UNKNOWN_ROWS if future_rows else 0
    return tuple(
        (name, unknown if name in new else _rows(conn, planned.layout, name))
        for name in planned.drop
    )


def _dry_run(
    conn: pymysql.Connection,
    database: str,
    table: str,
    now: datetime,
    months_ahead: int,
    retain_months: int | None,
    allow_drop_rows: bool,
) -> Result:
    planned, future_rows = _plan(conn, database, table, now, months_ahead, retain_months)
    doomed = _doomed(conn, planned, future_rows)
    refused = drop_needs_permission(doomed) and not allow_drop_rows
    if refused:
        planned = replace(planned, drop=())
    name = f"{database}.{table}"
    log.info("partitions of %s (dry run): %d statement(s)", name, len(planned.statements()))
    return Result(
        name,
        tuple(planned.statements()),
        tuple(p.name for p in planned.add),
        planned.drop,
        str(planned.through),
        future_rows,
        dry_run=True,
        attempts=0,
        doomed=doomed,
        drop_refused=refused,
    )


def _is_lock_wait_timeout(exc: BaseException) -> bool:
    return isinstance(exc, pymysql.err.OperationalError) and bool(
        exc.args and exc.args[0] == LOCK_WAIT_TIMEOUT_ERROR
    )


def _apply(
    conn: pymysql.Connection,
    database: str,
    table: str,
    now: datetime,
    months_ahead: int,
    retain_months: int | None,
    attempts: int,
    name: str,
    allow_drop_rows: bool,
) -> Result:
    executed: list[str] = []
    added: list[str] = []
    dropped: list[str] = []
    future_rows_before: list[int] = []
    through = ""
    doomed: tuple[tuple[str, int], ...] = ()
    refused = False

    def attempt() -> None:
        nonlocal through, doomed, refused
        # Re-plan on every attempt: a statement that succeeded before the timeout must not run
        # again, and the plan is cheap.
        planned, future_rows = _plan(conn, database, table, now, months_ahead, retain_months)
        through = str(planned.through)
        if not future_rows_before:
            future_rows_before.append(future_rows)
        if planned.empty:
            log.info("partitions of %s: present through %s; nothing to do", name, through)
            return
        if planned.add and future_rows:
            log.warning(
                "partitions of %s: %s holds %d row(s); REORGANIZE copies them into the new "
                "partitions, holding the table's metadata lock while it does",
                name,
                planned.layout.future,
                future_rows,
            )
        with conn.cursor() as cur:
            # Reorganize before dropping: should the drop time out, the months ahead exist.
            if (sql := planned.reorganize_sql()) is not None:
                log.info("partitions of %s: %s", name, sql)
                cur.execute(sql)
                executed.append(sql)
                added.extend(p.name for p in planned.add)
            if planned.drop:
                # Counted after the reorganize: every partition to drop exists by now.
                doomed = _doomed(conn, planned)
                refused = drop_needs_permission(doomed) and not allow_drop_rows
            if refused:
                log.warning(
                    "partitions of %s: retention would drop %d partition(s) holding %d row(s)"
                    "; not without partitions.allow_drop_rows (or --allow-drop-rows): %s",
                    name,
                    len(doomed),
                    sum(rows for _, rows in doomed if rows > 0),
                    ", ".join(f"{part} ({rows} rows)" for part, rows in doomed),
                )
            elif (sql := planned.drop_sql()) is not None:
                log.info("partitions of %s: %s", name, sql)
                cur.execute(sql)
                executed.append(sql)
                dropped.extend(planned.drop)

    def before_sleep(state: RetryCallState) -> None:
        log.warning(
            "partitions of %s: attempt %d of %d timed out waiting for the table's metadata lock "
            "(a transaction holds it); retrying",
            name,
            state.attempt_number,
            attempts,
        )

    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        # 0.5 s, 1 s, 2 s … up to 10 s, plus up to 0.5 s of jitter so racing runs spread out.
        wait=wait_exponential(multiplier=0.5, max=10) + wait_random(0, 0.5),
        retry=retry_if_exception(_is_lock_wait_timeout),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        retrying(attempt)
    except pymysql.err.OperationalError as exc:
        if not _is_lock_wait_timeout(exc):
            raise
        done = f"; done before giving up: {executed!r}" if executed else "; table unchanged"
        raise MetadataLockTimeout(
            f"partitions of {name}: gave up after {attempts} attempt(s): every ALTER waited "
            f"lock_wait_timeout for the table's metadata lock, which a transaction holds "
            f"(an open transaction that read or wrote {name}; see SHOW PROCESSLIST){done}"
        ) from exc
    result = Result(
        name,
        tuple(executed),
        tuple(added),
        tuple(dropped),
        through,
        future_rows_before[0] if future_rows_before else 0,
        attempts=retrying.statistics.get("attempt_number", 1),
        doomed=doomed,
        drop_refused=refused,
    )
    if executed:
        log.info(
            "partitions of %s: added %s, dropped %s; present through %s",
            name,
            ", ".join(added) or "none",
            ", ".join(dropped) or "none",
            through,
        )
    return result


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def _quoted_table(layout: Layout) -> str:
    return f"{_quote(layout.schema)}.{_quote(layout.table)}"


# ---- the Celery task --------------------------------------------------------------------------


@app.task(
    name=ENSURE_PARTITIONS_TASK,
    # Only a lost or refused connection is transient here; an unsupported table or a metadata
    # lock held for all attempts needs an operator, and beat runs the task again tomorrow.
    autoretry_for=(DatabaseUnavailable,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=8,
)
def ensure_partitions_task(
    months_ahead: int | None = None, retain_months: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Celery entry point: the configured table; returns `Result.to_json()`."""
    result = ensure_from_settings(
        settings, months_ahead=months_ahead, retain_months=retain_months, dry_run=dry_run
    )
    if not dry_run and not result.skipped and result.through:
        now = datetime.now(UTC)
        headroom = headroom_months(Month.parse(result.through), now)
        metrics.PARTITIONS_HEADROOM.labels(result.table).set(headroom)
        metrics.PARTITIONS_LAST_SUCCESS.set(now.timestamp())
    return result.to_json()
