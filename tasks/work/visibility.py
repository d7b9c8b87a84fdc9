"""Sweep only once the batch's commits are visible to readers on the primary (issue 22, seam 5).

A transaction reaches the binlog, and so the listener, before the storage engine makes it
visible: both servers commit in two phases, InnoDB prepare, binlog write (and sync), then the
engine commit, and a binlog client is sent the events after the write (MariaDB and MySQL
alike; under semi-synchronous replication with AFTER_SYNC the source even waits for a
replica's acknowledgement in between). Measured here (MariaDB 10.11, docs/seams.md): about
0.5% of transactions were read off the binlog before a plain SELECT on the primary saw them,
for up to 3.3 ms. A sweep that runs inside that gap lets a reader take a fresh lease, read the
old row and fill: nothing revokes that lease, and the old answer stays until its TTL.

So before the first sweep the task takes a shared lock on every row the batch changed
(`SELECT … LOCK IN SHARE MODE`, autocommit: released at once): a transaction between its
binlog write and its engine commit still holds its row locks, so the read waits until it
has committed (its changes visible), and then the sweep runs. Rows are the changed chunk rows
(`Batch.changed`) and the metadata rows (`Batch.chunk_refs`). A lock held longer than
VISIBLE_WAIT_S (a long transaction of a later writer, a semi-sync acknowledgement that does
not come) does not hold the invalidation back: the task sweeps anyway and then raises
CommitsPending, so Celery retries the batch (sweeping again) until the rows are readable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import pymysql

from core.batch import Batch
from tasks.work.runtime import Runtime

log = logging.getLogger(__name__)

VISIBLE_WAIT_S = 10.0  # how long a sweep waits for the rows' locks before going ahead
LOCK_WAIT_S = 1  # innodb_lock_wait_timeout of one attempt (whole seconds)
_LOCK_WAIT_TIMEOUT = 1205  # ER_LOCK_WAIT_TIMEOUT
_DEADLOCK = 1213  # ER_LOCK_DEADLOCK: our shared lock was chosen as the victim; ask again
_PART = 500


class CommitsPending(Exception):
    """Raised after a sweep whose batch's rows were still locked: retry the batch."""


def wait_for_commits(rt: Runtime, batch: Batch) -> bool:
    """Wait until every row the batch changed is committed on the primary; False when one
    was still locked after VISIBLE_WAIT_S. Flushes and second passes do not wait (a flush
    has no rows; a second pass follows a first that waited)."""
    if batch.flush or batch.second_pass or not (batch.changed or batch.chunk_refs):
        return True
    settings = rt.settings
    deadline = time.monotonic() + VISIBLE_WAIT_S
    conn = rt.db()
    with conn.cursor() as cur:
        cur.execute(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}")
    for table, ids in (
        (settings.tables.chunks, batch.changed),
        (settings.tables.global_elements, batch.chunk_refs),
    ):
        for part in _parts(ids):
            if not _lock_read(conn, table, part, deadline):
                log.warning(
                    "rows of %s changed by batch %s/%d are still locked after %.0f s: "
                    "sweeping now, and again once they are committed",
                    table,
                    batch.term or "-",
                    batch.seq,
                    VISIBLE_WAIT_S,
                )
                return False
    return True


def _lock_read(conn: pymysql.Connection, table: str, ids: list[str], deadline: float) -> bool:
    marks = ", ".join(["%s"] * len(ids))
    sql = f"SELECT chunk_id FROM `{table}` WHERE chunk_id IN ({marks}) LOCK IN SHARE MODE"
    while True:
        try:
            with conn.cursor() as cur:
                cur.execute(sql, ids)
                cur.fetchall()
            return True
        except pymysql.err.OperationalError as exc:
            if exc.args[:1] not in ((_LOCK_WAIT_TIMEOUT,), (_DEADLOCK,)):
                raise
            if time.monotonic() >= deadline:
                return False


def _parts(ids: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), _PART):
        yield ordered[start : start + _PART]
