"""Which of the configured MySQL sources is the primary now: the listener streams from it, the
tasks read from it.

One source: that one, as ever (it may be an address that moves to whichever server is the
primary). Several (PRIMER_MYSQL_URL with commas): the first one that answers with
`@@read_only` off, trying the one that served last before the others, so a listener does not
wander back to an old primary restarted writable while the new one still serves. A replica
(read_only on) is never chosen: until one is promoted, connecting fails, and the callers'
retries with backoff wait for it.
"""

from __future__ import annotations

import logging
from typing import Any

import pymysql

from config.mysql import MySQLSettings

log = logging.getLogger(__name__)

CR_CONN_HOST_ERROR = 2003  # the client's "can't connect" code: callers retry on it


class SourcePicker:
    """Connects to the primary among `sources`, remembering which one served last."""

    def __init__(self, sources: tuple[MySQLSettings, ...], connect_timeout: float = 5) -> None:
        assert sources, "at least one source"
        self.sources = sources
        self.connect_timeout = connect_timeout
        self.current = sources[0]

    def connect(self, **options: Any) -> pymysql.Connection:
        """An autocommit connection to the primary (the database selected); raises
        pymysql.err.OperationalError naming every source and why it was passed over."""
        if len(self.sources) == 1:
            return self._open(self.sources[0], options)
        order = [self.current, *(s for s in self.sources if s is not self.current)]
        passed_over = []
        for source in order:
            try:
                conn = self._open(source, options)
            except pymysql.Error as exc:
                passed_over.append(f"{source.host}:{source.port}: {exc.args[-1]}")
                continue
            if not _read_only(conn):
                if source is not self.current:
                    log.warning(
                        "MySQL source %s:%s is the primary now (was %s:%s)",
                        source.host,
                        source.port,
                        self.current.host,
                        self.current.port,
                    )
                    self.current = source
                return conn
            conn.close()
            passed_over.append(f"{source.host}:{source.port}: read_only (a replica)")
        raise pymysql.err.OperationalError(
            CR_CONN_HOST_ERROR, "no writable MySQL source: " + "; ".join(passed_over)
        )

    def _open(self, source: MySQLSettings, options: dict[str, Any]) -> pymysql.Connection:
        return pymysql.connect(
            database=source.database,
            autocommit=True,
            connect_timeout=self.connect_timeout,
            **{**source.connect_kwargs(), **options},
        )


def _read_only(conn: pymysql.Connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.read_only")
        row = cur.fetchone()
    return bool(row and int(row[0]))
