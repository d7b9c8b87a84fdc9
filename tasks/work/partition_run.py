"""One run of the partition plan on a table: read its partitioning from information_schema,
plan (core.partition_plan, pure), and run the DDL, or in a dry run only say what it would
run. The connection, its session settings and the run lock are the caller's
(tasks.work.partitions)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
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

from core.partition_plan import (
    UNKNOWN_ROWS,
    PartitionError,
    Plan,
    drop_needs_permission,
    plan,
    understand,
)
from tasks.work.partition_reads import partition_rows, read_partitioning

log = logging.getLogger(__name__)

LOCK_WAIT_TIMEOUT_ERROR = 1205


class MetadataLockTimeout(PartitionError):
    """Raised when every attempt's DDL waited `lock_wait_timeout` for the table's metadata lock:
    another session keeps a transaction open on the table."""


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


def plan_now(
    conn: pymysql.Connection,
    database: str,
    table: str,
    now: datetime,
    months_ahead: int,
    retain_months: int | None,
) -> tuple[Plan, int]:
    """The plan for the table as it is now, and the rows in its MAXVALUE partition."""
    layout = understand(read_partitioning(conn, database, table))
    return plan(layout, now, months_ahead, retain_months), partition_rows(
        conn, layout, layout.future
    )


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
        (name, unknown if name in new else partition_rows(conn, planned.layout, name))
        for name in planned.drop
    )


# ---- running ----------------------------------------------------------------------------------


def dry_run(
    conn: pymysql.Connection,
    database: str,
    table: str,
    now: datetime,
    months_ahead: int,
    retain_months: int | None,
    allow_drop_rows: bool,
) -> Result:
    planned, future_rows = plan_now(conn, database, table, now, months_ahead, retain_months)
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


def apply(
    conn: pymysql.Connection,
    database: str,
    table: str,
    now: datetime,
    months_ahead: int,
    retain_months: int | None,
    attempts: int,
    allow_drop_rows: bool,
) -> Result:
    """Run the plan, re-planned on every attempt; an attempt whose DDL waited out
    `lock_wait_timeout` for the metadata lock is retried (backing off) up to `attempts`, after
    which MetadataLockTimeout says what was done before giving up."""
    run = _Run(conn, database, table, now, months_ahead, retain_months, allow_drop_rows)
    retrying = _retrying(run.name, attempts)
    try:
        retrying(run.attempt)
    except pymysql.err.OperationalError as exc:
        if not _is_lock_wait_timeout(exc):
            raise
        done = f"; done before giving up: {run.executed!r}" if run.executed else "; table unchanged"
        raise MetadataLockTimeout(
            f"partitions of {run.name}: gave up after {attempts} attempt(s): every ALTER waited "
            f"lock_wait_timeout for the table's metadata lock, which a transaction holds "
            f"(an open transaction that read or wrote {run.name}; see SHOW PROCESSLIST){done}"
        ) from exc
    if run.executed:
        log.info(
            "partitions of %s: added %s, dropped %s; present through %s",
            run.name,
            ", ".join(run.added) or "none",
            ", ".join(run.dropped) or "none",
            run.through,
        )
    return run.result(retrying.statistics.get("attempt_number", 1))


def _retrying(name: str, attempts: int) -> Retrying:
    def before_sleep(state: RetryCallState) -> None:
        log.warning(
            "partitions of %s: attempt %d of %d timed out waiting for the table's metadata lock "
            "(a transaction holds it); retrying",
            name,
            state.attempt_number,
            attempts,
        )

    return Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        # 0.5 s, 1 s, 2 s … up to 10 s, plus up to 0.5 s of jitter so racing runs spread out.
        wait=wait_exponential(multiplier=0.5, max=10) + wait_random(0, 0.5),
        retry=retry_if_exception(_is_lock_wait_timeout),
        before_sleep=before_sleep,
        reraise=True,
    )


@dataclass
class _Run:
    """One run's attempts, and what they did between them."""

    conn: pymysql.Connection
    database: str
    table: str
    now: datetime
    months_ahead: int
    retain_months: int | None
    allow_drop_rows: bool
    executed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    future_rows: int | None = None  # in the MAXVALUE partition before the first attempt
    through: str = ""
    doomed: tuple[tuple[str, int], ...] = ()
    refused: bool = False

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}"

    def attempt(self) -> None:
        # Re-plan on every attempt: a statement that succeeded before the timeout must not run
        # again, and the plan is cheap.
        planned, future_rows = plan_now(
            self.conn, self.database, self.table, self.now, self.months_ahead, self.retain_months
        )
        self.through = str(planned.through)
        if self.future_rows is None:
            self.future_rows = future_rows
        if planned.empty:
            log.info("partitions of %s: present through %s; nothing to do", self.name, self.through)
            return
        if planned.add and future_rows:
            log.warning(
                "partitions of %s: %s holds %d row(s); REORGANIZE copies them into the new "
                "partitions, holding the table's metadata lock while it does",
                self.name,
                planned.layout.future,
                future_rows,
            )
        with self.conn.cursor() as cur:
            # Reorganize before dropping: should the drop time out, the months ahead exist.
            if (sql := planned.reorganize_sql()) is not None:
                self._execute(cur, sql)
                self.added.extend(p.name for p in planned.add)
            self._drop(cur, planned)

    def _drop(self, cur: Any, planned: Plan) -> None:
        if planned.drop:
            # Counted after the reorganize: every partition to drop exists by now.
            self.doomed = _doomed(self.conn, planned)
            self.refused = drop_needs_permission(self.doomed) and not self.allow_drop_rows
        if self.refused:
            log.warning(
                "partitions of %s: retention would drop %d partition(s) holding %d row(s)"
                "; not without partitions.allow_drop_rows (or --allow-drop-rows): %s",
                self.name,
                len(self.doomed),
                sum(rows for _, rows in self.doomed if rows > 0),
                ", ".join(f"{part} ({rows} rows)" for part, rows in self.doomed),
            )
        elif (sql := planned.drop_sql()) is not None:
            self._execute(cur, sql)
            self.dropped.extend(planned.drop)

    def _execute(self, cur: Any, sql: str) -> None:
        log.info("partitions of %s: %s", self.name, sql)
        cur.execute(sql)
        self.executed.append(sql)

    def result(self, attempts: int) -> Result:
        return Result(
            self.name,
            tuple(self.executed),
            tuple(self.added),
            tuple(self.dropped),
            self.through,
            self.future_rows or 0,
            attempts=attempts,
            doomed=self.doomed,
            drop_refused=self.refused,
        )
