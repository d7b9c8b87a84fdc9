"""The MySQL/MariaDB settings the listener needs, checked before it streams."""

from __future__ import annotations

from dataclasses import dataclass

import pymysql

from core.position import FilePosition, GtidPosition, Position

REQUIRED = {
    "log_bin": ("ON",),
    "binlog_format": ("ROW",),
    "binlog_row_image": ("FULL", "NOBLOB"),
    "binlog_row_metadata": ("FULL",),
}
HOW_TO_SET = {
    "log_bin": "start the server with --log-bin",
    "binlog_format": "SET GLOBAL binlog_format = 'ROW' (and binlog_format=ROW in my.cnf)",
    "binlog_row_image": "SET GLOBAL binlog_row_image = 'FULL' (or NOBLOB)",
    "binlog_row_metadata": "SET GLOBAL binlog_row_metadata = 'FULL' (else no column names)",
}


class ServerSettingsError(Exception):
    """Raised when the server's binlog settings would make the listener miss or misread changes."""


@dataclass(frozen=True)
class ServerInfo:
    version: str
    is_mariadb: bool
    gtid_mode: bool  # MySQL: GTID mode on; MariaDB always has GTIDs


def check_server(conn: pymysql.Connection) -> ServerInfo:
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchone()[0])
        cur.execute(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
            "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', 'gtid_mode')"
        )
        found = {str(name).lower(): str(value).upper() for name, value in cur.fetchall()}
    problems = []
    for name, allowed in REQUIRED.items():
        value = found.get(name, "<missing>")
        if value not in allowed:
            problems.append(
                f"{name} is {value!r}, needs {' or '.join(allowed)}: {HOW_TO_SET[name]}"
            )
    if problems:
        raise ServerSettingsError(
            f"server {version} is not set up for the listener:\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )
    is_mariadb = "MARIADB" in version.upper()
    return ServerInfo(version, is_mariadb, is_mariadb or found.get("gtid_mode") == "ON")


def gtid_position(conn: pymysql.Connection, server: ServerInfo) -> str:
    """Every transaction the server holds: MariaDB's @@gtid_binlog_pos (its binlog, replicated
    transactions included with log_slave_updates), MySQL's @@gtid_executed."""
    with conn.cursor() as cur:
        variable = "gtid_binlog_pos" if server.is_mariadb else "gtid_executed"
        cur.execute(f"SELECT @@GLOBAL.{variable}")
        return str(cur.fetchone()[0] or "").replace("\n", "")


def current_position(conn: pymysql.Connection, server: ServerInfo) -> Position:
    """Where the binlog ends now: the cold-start position."""
    with conn.cursor() as cur:
        if server.is_mariadb:
            cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
            return GtidPosition(str(cur.fetchone()[0] or ""))
        if server.gtid_mode:
            cur.execute("SELECT @@GLOBAL.gtid_executed")
            return GtidPosition(str(cur.fetchone()[0] or "").replace("\n", ""))
        try:
            cur.execute("SHOW BINARY LOG STATUS")
        except pymysql.err.ProgrammingError:  # MySQL < 8.2
            cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
        return FilePosition(str(row[0]), int(row[1]))
