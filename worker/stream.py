"""The binlog reader: a thread that turns the binlog into a queue of plain records.

A thread, because python-mysql-replication blocks in a socket read; the listener's loop
then sees "what is already readable" (the queue) and can renew its lock meanwhile.

The queue carries one worker.batcher.Transaction per committed transaction (its row
changes already reduced to element images), or the exception that stopped the reader.
One item per transaction, not per row, keeps the two threads from waking each other up.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import socket
import threading
from typing import Any

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    PartialUpdateRowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from config import MySQLSettings, Settings
from worker import metrics
from worker.batcher import Transaction, TransactionBuilder, mariadb_gtids
from worker.rowdecode import RowDecoder
from worker.server_check import ServerInfo

log = logging.getLogger(__name__)

# The columns the element images are made of (core.changes): all the decoder decodes.
CHUNK_KEYS = ("realm_id", "element_category", "priority_score", "enforcement_level")
ELEMENT_KEYS = ("chunk_id",)
_MISSING = "cols_bitmap"  # none_sources tag: the column is not in this row image (NOBLOB)
_DDL = re.compile(r"^\s*(TRUNCATE|DROP|ALTER|RENAME|CREATE\s+OR\s+REPLACE)\b", re.IGNORECASE)


class ReaderStopped(Exception):
    """Raised inside the reader thread when the library tries to reconnect after stop()."""


class Position:
    """Where the stream has got to, as a checkpoint: GTID state, or file+pos."""

    def __init__(self, start: dict[str, Any], server: ServerInfo) -> None:
        self.server = server
        self.file = start.get("file")
        self.pos = start.get("pos")
        self.gtid_set = str(start.get("gtid", ""))
        # MariaDB: domain id -> last complete GTID
        self.domains = mariadb_gtids(self.gtid_set) if server.is_mariadb else {}
        self.current: str | None = None

    def begin(self, gtid: str) -> None:
        self.current = gtid

    def end(self, stream: BinLogStreamReader) -> dict[str, Any]:
        """Record the end of the current transaction; return the checkpoint after it."""
        if self.current is not None:
            if self.server.is_mariadb:
                self.domains[self.current.split("-", 1)[0]] = self.current
                if len(self.domains) == 1:
                    self.gtid_set = self.current
                else:
                    self.gtid_set = ",".join(self.domains[d] for d in sorted(self.domains, key=int))
            else:
                from pymysqlreplication.gtid import GtidSet

                merged = GtidSet(self.gtid_set) + GtidSet(self.current)
                self.gtid_set = str(merged)
            self.current = None
        self.file, self.pos = stream.log_file, stream.log_pos
        return self.checkpoint()

    def checkpoint(self) -> dict[str, Any]:
        if self.server.gtid_mode:
            return {"gtid": self.gtid_set}
        return {"file": self.file, "pos": self.pos}


class BinlogReader(threading.Thread):
    def __init__(
        self,
        settings: Settings,
        server: ServerInfo,
        start: dict[str, Any],
        out: queue.Queue[Transaction | BaseException],
        source: MySQLSettings | None = None,
    ) -> None:
        """`source`: the server to stream from (adapters.sources picked it); default
        settings.mysql."""
        super().__init__(name="binlog-reader", daemon=True)
        self.settings = settings
        self.server = server
        self.position = Position(start, server)
        self.out = out
        self.tables = {settings.chunks_table, settings.elements_table}
        self.txn = TransactionBuilder(
            settings.chunks_table, settings.elements_table, settings.ignored_columns
        )
        self.decoder = RowDecoder(
            {settings.chunks_table: CHUNK_KEYS, settings.elements_table: ELEMENT_KEYS},
            settings.ignored_columns,
        )
        self._stopping = threading.Event()
        kwargs: dict[str, Any] = {}
        if server.gtid_mode:
            kwargs["auto_position"] = self.position.gtid_set
        else:
            kwargs.update(log_file=self.position.file, log_pos=self.position.pos)
        self.stream = BinLogStreamReader(
            connection_settings=(source or settings.mysql).connect_kwargs(),
            server_id=settings.server_id,
            blocking=True,
            resume_stream=True,
            is_mariadb=server.is_mariadb,
            only_events=[
                WriteRowsEvent,
                UpdateRowsEvent,
                # MySQL's binlog_row_value_options=PARTIAL_JSON writes updates of JSON columns
                # as this subclass; the library matches event classes exactly, so without it
                # those updates (category or priority changes included) would be dropped.
                PartialUpdateRowsEvent,
                DeleteRowsEvent,
                XidEvent,
                QueryEvent,
                MariadbGtidEvent,
                GtidEvent,
            ],
            # Rows of other tables are not even decoded (DDL QueryEvents still come through).
            only_schemas=[settings.mysql.database],
            only_tables=sorted(self.tables),
            slave_heartbeat=5,
            # A table id's map is parsed once, not before every row event: that parse is
            # most of the cost of a single-row transaction. A table whose columns change
            # gets a new table id (the server's rule), and the DDL of a watched table also
            # clears the maps (below), should a server ever keep the id.
            freeze_schema=True,
            **kwargs,
        )
        # The library reconnects by itself on error 2013, which stop() causes: refuse that
        # once stopped, or a replica that lost the lead would keep a stream open (under our
        # server_id) and a reader thread running. The method is private (name-mangled).
        connect = self.stream._BinLogStreamReader__connect_to_stream

        def connect_unless_stopped() -> None:
            if self._stopping.is_set():
                raise ReaderStopped("the binlog reader was stopped")
            connect()

        self.stream._BinLogStreamReader__connect_to_stream = connect_unless_stopped

    def stop(self) -> None:
        self._stopping.set()
        # Shut the socket down first: closing it waits for the reader thread's blocked read
        # (up to the next heartbeat); a shutdown ends that read at once. The library keeps
        # the connection private, hence the getattr.
        sock = getattr(getattr(self.stream, "_stream_connection", None), "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # closing a broken socket may raise anything; the thread is ending either way
        with contextlib.suppress(Exception):
            self.stream.close()

    def run(self) -> None:
        try:
            self._read()
        except Exception as exc:
            if not self._stopping.is_set():
                self.out.put(exc)

    def _read(self) -> None:
        database = self.settings.mysql.database
        add_row = self.txn.row
        for event in self.stream:
            if self._stopping.is_set():
                return
            if isinstance(event, (MariadbGtidEvent, GtidEvent)):
                self.position.begin(event.gtid)
            elif isinstance(event, XidEvent):
                self._end(event.timestamp)
            elif isinstance(event, QueryEvent):
                query = _text(event.query)
                if query.upper() == "BEGIN":
                    continue
                if _DDL.match(query) and self._touches_watched(query, _text(event.schema)):
                    self.txn.ddl(_text(event.schema), query)
                    self.stream.table_map.clear()  # frozen maps: parse the new ones
                self._end(event.timestamp)  # COMMIT, or a DDL: its own transaction
            elif event.schema == database and event.table in self.tables:
                table = event.table
                decoded = self.decoder.decode(event)
                if decoded is not None:
                    for before, after, visible in decoded:
                        add_row(table, before, after, visible)
                    continue
                metrics.DECODER_FALLBACKS.inc()
                if isinstance(event, UpdateRowsEvent):
                    for row in event.rows:
                        before = _present(row["before_values"], row.get("before_none_sources"))
                        after = _present(row["after_values"], row.get("after_none_sources"))
                        add_row(table, before, after)
                else:
                    is_insert = isinstance(event, WriteRowsEvent)
                    for row in event.rows:
                        values = _present(row["values"], row.get("none_sources"))
                        if is_insert:
                            add_row(table, None, values)
                        else:
                            add_row(table, values, None)
            # Keep the library's own reconnect (error 2013) resuming from here, not from
            # where the stream was opened.
            if self.server.gtid_mode and self.position.current is None:
                self.stream.auto_position = self.position.gtid_set or self.stream.auto_position

    def _end(self, timestamp: int) -> None:
        self.out.put(self.txn.end(self.position.end(self.stream), timestamp))

    def _touches_watched(self, query: str, schema: str) -> bool:
        """Whether a DDL statement names a watched table of our database (safe side: a
        statement naming the table in another database also counts when ours is named)."""
        lowered = query.lower()
        database = self.settings.mysql.database.lower()
        if schema.lower() != database and database not in lowered:
            return False
        return any(
            re.search(rf"(^|[^a-z0-9_$]){re.escape(table.lower())}($|[^a-z0-9_$])", lowered)
            for table in self.tables
        )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value or "")


def _present(values: dict[str, Any], none_sources: dict[str, str] | None) -> dict[str, Any]:
    """The row image without the columns it does not carry (binlog_row_image=NOBLOB)."""
    if not none_sources or _MISSING not in none_sources.values():
        return values
    return {name: value for name, value in values.items() if none_sources.get(name) != _MISSING}
