"""`ensure_partitions`: keep monthly partitions of the analytics table ahead of time, so that a
month's rows land in a partition of their own, not in the MAXVALUE one (which a later
REORGANIZE must copy while it holds the table's metadata lock, and retention cannot drop).

The planning is pure (core.partition_plan); tasks.work.partition_run reads the partitioning
from information_schema and runs the plan; this module runs it safely:

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymysql

from config import MySQLSettings, PartitionSettings, Settings
from core.partition_plan import PartitionError, describe, understand
from tasks.work import partition_run
from tasks.work.partition_reads import read_partitioning
from tasks.work.partition_run import MetadataLockTimeout, Result

log = logging.getLogger(__name__)

__all__ = [
    "DatabaseUnavailable",
    "Listing",
    "MetadataLockTimeout",
    "PartitionError",
    "Result",
    "ensure_from_settings",
    "ensure_partitions",
    "list_partitions",
    "read_partitioning",
    "run_lock_name",
]

# Can't connect, server gone away, lost connection during query: worth retrying later.
CONNECTION_ERRORS = frozenset({2003, 2006, 2013})
RUN_LOCK_PREFIX = "primer-cache:partitions:"
RUN_LOCK_TIMEOUT = 120.0  # seconds a run waits for another run of the same table to finish
MAX_LOCK_NAME = 64  # MySQL refuses longer GET_LOCK names


class DatabaseUnavailable(Exception):
    """Raised when MySQL cannot be reached or the connection dropped (errors 2003/2006/2013);
    the Celery task retries on it, later."""


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
                return partition_run.dry_run(
                    conn, database, table, now, months_ahead, retain_months, allow_drop_rows
                )
            with _run_lock(conn, name, run_lock_timeout) as acquired:
                if not acquired:
                    return _skipped(name, run_lock_timeout)
                return partition_run.apply(
                    conn,
                    database,
                    table,
                    now,
                    months_ahead,
                    retain_months,
                    attempts,
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


def _skipped(name: str, run_lock_timeout: float) -> Result:
    log.warning(
        "partitions of %s: another run held the run lock for %.0f s; skipped",
        name,
        run_lock_timeout,
    )
    return Result(name, (), (), (), "", 0, skipped=True)


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
