"""Read replicas: check at start that each replicates from the primary with GTIDs, and wait
until each has applied a GTID position.

Why: the primer server reads from replicas. An invalidation made the moment the primary
commits lets a miss refill the cache from a replica that has not applied the change yet, with
the old answer, after the sweep. Waiting until every replica has the batch's GTID before the
sweep closes that window (MariaDB MASTER_GTID_WAIT, MySQL WAIT_FOR_EXECUTED_GTID_SET).

The MySQL forms (SHOW REPLICA STATUS, WAIT_FOR_EXECUTED_GTID_SET, GTID_SUBSET) are written
from MySQL 8.0's documentation and are not exercised by the tests (MariaDB only here).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysql.cursors import DictCursor

from config.mysql import MySQLSettings
from config.replicas import ReplicaSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
DOWN_BACKOFF_S = 2.0  # after a failure, a replica counts as late without being asked again
GTID_USED = ("SLAVE_POS", "CURRENT_POS")  # MariaDB Using_Gtid values of a GTID replica


class ReplicaError(Exception):
    """Raised at start when a configured read replica cannot be waited for: unreachable, not
    a replica of the primary the listener tails, replicating without GTIDs, or the primary
    itself has no GTIDs."""


def replica_id(replica: MySQLSettings) -> str:
    """How logs, follow-up tasks and metrics name a replica: host:port (unique in settings)."""
    return f"{replica.host}:{replica.port}"


def connect(replica: MySQLSettings, timeout: float = CONNECT_TIMEOUT_S) -> pymysql.Connection:
    """A connection whose connect and handshake give up after `timeout` seconds (a stopped
    server accepts TCP connections but never answers)."""
    return pymysql.connect(
        database=replica.database or None,
        autocommit=True,
        connect_timeout=timeout,
        read_timeout=timeout,
        charset="utf8mb4",
        **replica.connect_kwargs(),
    )


# ---- the start-up check -----------------------------------------------------------------


@dataclass(frozen=True)
class _Primary:
    server_id: int
    is_mariadb: bool
    gtid_mode: bool
    where: str


def check_replicas(primary: pymysql.Connection, settings: ReplicaSettings, where: str) -> None:
    """Raise ReplicaError naming every replica that cannot serve (`where`: the primary's
    host:port, for messages). Stopped replication threads only warn: a replica held behind is
    what the follow-up passes are for."""
    if not settings:
        return
    info = _primary_info(primary, where)
    if not info.gtid_mode:
        raise ReplicaError(
            f"read replicas are configured but the primary {where} has no GTIDs (gtid_mode "
            "is OFF): waiting for replicas needs GTIDs; set gtid_mode=ON and "
            "enforce_gtid_consistency=ON, or drop PRIMER_REPLICA_URLS"
        )
    problems = []
    for replica in settings.urls:
        try:
            _check_one(replica, info)
        except ReplicaError as exc:
            problems.append(str(exc))
    if problems:
        raise ReplicaError(
            "read replicas cannot be used:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _primary_info(conn: pymysql.Connection, where: str) -> _Primary:
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchone()[0])
        cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('server_id', 'gtid_mode')")
        found = {str(name).lower(): str(value).upper() for name, value in cur.fetchall()}
    is_mariadb = "MARIADB" in version.upper()
    return _Primary(
        server_id=int(found.get("server_id", "0")),
        is_mariadb=is_mariadb,
        gtid_mode=is_mariadb or found.get("gtid_mode") == "ON",
        where=where,
    )


def _check_one(replica: MySQLSettings, primary: _Primary) -> None:
    name = replica.url()
    try:
        conn = connect(replica)
    except pymysql.Error as exc:
        raise ReplicaError(f"read replica {name}: cannot connect: {exc}") from None
    try:
        rows = _replication_status(conn)
        mine = [row for row in rows if _source_server_id(row) == primary.server_id]
        if not rows:
            raise ReplicaError(
                f"read replica {name} is not replicating (no replication set up: "
                "SHOW SLAVE STATUS is empty)"
            )
        if not mine:
            sources = ", ".join(
                f"server_id {_source_server_id(row)} at {_field(row, 'Master_Host', 'Source_Host')}"
                f":{_field(row, 'Master_Port', 'Source_Port')}"
                for row in rows
            )
            raise ReplicaError(
                f"read replica {name} does not replicate from the primary {primary.where} "
                f"(server_id {primary.server_id}); it replicates from {sources}"
            )
        row = mine[0]
        if primary.is_mariadb:
            using = str(row.get("Using_Gtid", "No")).upper()
            if using not in GTID_USED:
                raise ReplicaError(
                    f"read replica {name} replicates by file and position (Using_Gtid="
                    f"{row.get('Using_Gtid')}): CHANGE MASTER TO MASTER_USE_GTID=slave_pos"
                )
        elif _variable(conn, "gtid_mode") != "ON":
            raise ReplicaError(f"read replica {name} has gtid_mode OFF: waiting needs GTIDs")
        io = _field(row, "Slave_IO_Running", "Replica_IO_Running")
        sql = _field(row, "Slave_SQL_Running", "Replica_SQL_Running")
        if (io, sql) != ("Yes", "Yes"):
            log.warning(
                "read replica %s is held behind (IO thread %s, SQL thread %s): batches it has "
                "not applied get follow-up passes",
                name,
                io,
                sql,
            )
    except pymysql.Error as exc:
        raise ReplicaError(
            f"read replica {name}: cannot read its replication status: {exc}"
        ) from None
    finally:
        conn.close()


def _replication_status(conn: pymysql.Connection) -> list[dict[str, Any]]:
    """Every replication channel of the server (MariaDB multi-source, MySQL 8.0.22+ names
    first, then the old ones)."""
    with conn.cursor(DictCursor) as cur:
        for statement in ("SHOW ALL SLAVES STATUS", "SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
            try:
                cur.execute(statement)
            except pymysql.err.ProgrammingError:
                continue
            return list(cur.fetchall())
    return []


def _source_server_id(row: dict[str, Any]) -> int:
    value = _field(row, "Master_Server_Id", "Source_Server_Id")
    return int(value) if str(value).isdigit() else -1


def _field(row: dict[str, Any], *names: str) -> str:
    for name in names:
        if name in row:
            return str(row[name])
    return "?"


def _variable(conn: pymysql.Connection, name: str) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL VARIABLES LIKE %s", (name,))
        row = cur.fetchone()
    return str(row[1]).upper() if row else ""


# ---- waiting ------------------------------------------------------------------------------


class ReplicaWaiter:
    """Waits for the replicas of one process; connections are opened lazily and dropped on
    any error (a replica that went away is simply late until it is back)."""

    def __init__(self, settings: ReplicaSettings) -> None:
        self.settings = settings
        self.replicas = {replica_id(r): r for r in settings.urls}
        self._conns: dict[str, pymysql.Connection] = {}
        self._mariadb: dict[str, bool] = {}
        self._down_until: dict[str, float] = {}

    def lagging(self, gtid: str, timeout: float, only: Iterable[str] | None = None) -> list[str]:
        """Wait up to `timeout` seconds in all until every replica (or those named in `only`)
        has applied the GTID position `gtid`; return the ids of those that have not."""
        deadline = time.monotonic() + timeout
        late = []
        for rid in self.replicas if only is None else only:
            replica = self.replicas.get(rid)
            if replica is None:
                log.warning("read replica %s is no longer configured: not waiting for it", rid)
                continue
            if not self._reached(rid, replica, gtid, max(0.0, deadline - time.monotonic())):
                late.append(rid)
        return late

    def _reached(self, rid: str, replica: MySQLSettings, gtid: str, timeout: float) -> bool:
        if time.monotonic() < self._down_until.get(rid, 0.0):
            return False  # failed a moment ago: do not spend the batch's wait on it again
        try:
            conn = self._conn(rid, replica, timeout)
            # The wait is bounded by the server; the socket's bound is for a server that
            # hangs (SIGSTOP, network): pymysql applies _read_timeout on the next read.
            conn._read_timeout = timeout + 1.0
            with conn.cursor() as cur:
                if self._mariadb[rid]:
                    # 0: applied; -1: not within the timeout
                    cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (gtid, timeout))
                    return cur.fetchone()[0] == 0
                if timeout <= 0:
                    cur.execute("SELECT GTID_SUBSET(%s, @@GLOBAL.gtid_executed)", (gtid,))
                    return cur.fetchone()[0] == 1
                # 0: applied; 1: not within the timeout
                cur.execute("SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)", (gtid, timeout))
                return cur.fetchone()[0] == 0
        except (pymysql.Error, OSError) as exc:
            log.warning("read replica %s cannot be asked for GTID %s: %s", rid, gtid, exc)
            self._drop(rid)
            self._down_until[rid] = time.monotonic() + DOWN_BACKOFF_S
            return False

    def _conn(self, rid: str, replica: MySQLSettings, timeout: float) -> pymysql.Connection:
        conn = self._conns.get(rid)
        if conn is None:
            conn = connect(replica, min(CONNECT_TIMEOUT_S, max(0.5, timeout)))
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                self._mariadb[rid] = "MARIADB" in str(cur.fetchone()[0]).upper()
            self._conns[rid] = conn
        return conn

    def _drop(self, rid: str) -> None:
        conn = self._conns.pop(rid, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        for rid in list(self._conns):
            self._drop(rid)
