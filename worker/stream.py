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
from collections.abc import Iterable
from typing import Any

import pymysql
import redis
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    PartialUpdateRowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from adapters.mysql.collations import read_collations
from adapters.redis import undecodable
from adapters.redis.connection import connect_redis
from config import MySQLSettings, Settings
from core.changes import Row
from core.collation import Collations
from core.position import Position
from core.statements import BOUNDARIES, leading_keyword, opens_transaction
from worker import metrics
from worker.batcher import Transaction, TransactionBuilder
from worker.faults import ReaderStopped
from worker.library_rows import library_rows, next_event
from worker.rowdecode import RowDecoder, Undecodable
from worker.server_check import ServerInfo, current_position
from worker.stream_position import StreamPosition

log = logging.getLogger(__name__)

QUEUE_SIZE = 50_000  # transactions a reader's queue holds ahead of its consumer

# The columns the element images are made of (core.changes): all the decoder decodes.
# chunk_id: the rows a batch changed, whose commits the invalidate task waits to see.
CHUNK_KEYS = ("chunk_id", "realm_id", "element_category", "priority_score", "enforcement_level")
ELEMENT_KEYS = ("chunk_id",)
# What the stream reads: rows of the watched tables, transaction boundaries, statements.
_EVENTS = [
    WriteRowsEvent,
    UpdateRowsEvent,
    # MySQL's binlog_row_value_options=PARTIAL_JSON writes updates of JSON columns as this
    # subclass; the library matches event classes exactly, so without it those updates
    # (category or priority changes included) would be dropped.
    PartialUpdateRowsEvent,
    DeleteRowsEvent,
    XidEvent,
    QueryEvent,
    MariadbGtidEvent,
    GtidEvent,
]


class BinlogReader(threading.Thread):
    def __init__(
        self,
        settings: Settings,
        server: ServerInfo,
        start: Position,
        out: queue.Queue[Transaction | BaseException],
        source: MySQLSettings | None = None,
        fast_out: queue.Queue[Transaction | BaseException] | None = None,
    ) -> None:
        """`source`: the server to stream from (adapters.mysql.sources picked it); default
        settings.mysql. `fast_out`: a second queue that gets every transaction too (the fast
        lane's, worker.fast_lane_feed: its deletes wait for nothing the term's loop does)."""
        super().__init__(name="binlog-reader", daemon=True)
        self.settings = settings
        self.source = source or settings.mysql
        self.server = server
        self.position = StreamPosition(start, server)
        self.out = out
        self.fast_out = fast_out
        self.tables = {settings.tables.chunks, settings.tables.global_elements}
        self.txn = TransactionBuilder(
            settings.tables.chunks, settings.tables.global_elements, settings.cache.ignored_columns
        )
        self.txn.collations = self.read_collations()
        self.decoder = RowDecoder(
            {settings.tables.chunks: CHUNK_KEYS, settings.tables.global_elements: ELEMENT_KEYS},
            settings.cache.ignored_columns,
        )
        self._stopping = threading.Event()
        self._redis: redis.Redis | None = None  # made when an undecodable event is recorded
        self._timestamp = 0  # of the last event read
        self.stream = self._open_stream()

    def _open_stream(self) -> BinLogStreamReader:
        """A binlog stream from `self.position` (at start, and after stepping past an event)."""
        settings = self.settings
        kwargs: dict[str, Any] = {}
        if self.server.gtid_mode:
            kwargs["auto_position"] = self.position.gtid_set
        else:
            kwargs.update(log_file=self.position.file, log_pos=self.position.pos)
        stream = BinLogStreamReader(
            connection_settings=self.source.connect_kwargs(),
            server_id=settings.listener.server_id,
            blocking=True,
            resume_stream=True,
            is_mariadb=self.server.is_mariadb,
            only_events=_EVENTS,
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
        self._refuse_reconnect_once_stopped(stream)
        return stream

    def _refuse_reconnect_once_stopped(self, stream: BinLogStreamReader) -> None:
        """The library reconnects by itself on error 2013, which stop() causes: refuse that
        once stopped, or a replica that lost the lead would keep a stream open (under our
        server_id) and a reader thread running. The method is private (name-mangled)."""
        connect = stream._BinLogStreamReader__connect_to_stream

        def connect_unless_stopped() -> None:
            if self._stopping.is_set():
                raise ReaderStopped("the binlog reader was stopped")
            connect()

        stream._BinLogStreamReader__connect_to_stream = connect_unless_stopped

    def read_collations(self) -> Collations:
        """The chunks table's collations (read again after a DDL of a watched table)."""
        conn = pymysql.connect(connect_timeout=5, **self.source.connect_kwargs())
        try:
            return read_collations(conn, self.settings.mysql.database, self.settings.tables.chunks)
        finally:
            conn.close()

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
            while not self._read():
                pass
        except Exception as exc:
            if not self._stopping.is_set():
                self.out.put(exc)

    def _read(self) -> bool:
        """Read the stream until stopped (True), or until an event neither decoder can read
        has been stepped past (False: read on, from the new stream)."""
        try:
            self._read_events()
        except Undecodable as exc:
            if self._stopping.is_set():
                return True
            self._step_past(exc)
            return False
        return True

    def _read_events(self) -> None:
        database = self.settings.mysql.database
        events = iter(self.stream)
        while True:
            event = next_event(events)
            if event is None or self._stopping.is_set():
                return
            self._timestamp = event.timestamp
            if isinstance(event, (MariadbGtidEvent, GtidEvent)):
                self.position.begin(event.gtid)
            elif isinstance(event, XidEvent):
                self._end(event.timestamp)
            elif isinstance(event, QueryEvent):
                self._statement(event)
            elif event.schema == database and event.table in self.tables:
                self._rows(event)

    def _statement(self, event: QueryEvent) -> None:
        """A statement: BEGIN (its rows follow), COMMIT, or anything else: DDL, say."""
        query = _text(event.query)
        if opens_transaction(query):
            return  # its rows follow: the transaction ends at COMMIT or XA END
        keyword = leading_keyword(query)
        schema = _text(event.schema)
        # Any statement but a transaction boundary that names a watched table flushes: DDL
        # however prefixed (core.statements), and whatever else it might be.
        if keyword not in BOUNDARIES and self._touches_watched(query, schema):
            self.txn.ddl(schema, query)
            self.stream.table_map.clear()  # frozen maps: parse the new ones
            # widest: events read before the DDL may predate a later change too
            self.txn.collations = self.txn.collations.widest(self.read_collations())
        self._end(event.timestamp)  # COMMIT, or a DDL: its own transaction

    def _rows(self, event: Any) -> None:
        """A row event of a watched table, decoded by worker.rowdecode, or by the library when
        the decoder does not cover its shape."""
        table = event.table
        add_row = self.txn.row
        rows: Iterable[tuple[Row | None, Row | None, bool | None]] | None
        rows = self.decoder.decode(event)
        if rows is None:
            metrics.DECODER_FALLBACKS.inc()
            rows = library_rows(event)
        for before, after, visible in rows:
            add_row(table, before, after, visible)

    def _emit(self, txn: Transaction) -> None:
        if self.fast_out is not None:
            self.fast_out.put(txn)  # first: the fast lane's deletes are the hurried ones
        self.out.put(txn)

    def _end(self, timestamp: int) -> None:
        self._emit(self.txn.end(self.position.end(self.stream), timestamp))
        # Keep the library's own reconnect (error 2013) resuming from here, not from where
        # the stream was opened.
        if self.server.gtid_mode:
            self.stream.auto_position = self.position.gtid_set or self.stream.auto_position

    def _step_past(self, exc: Undecodable) -> None:
        """The safe side for an event neither decoder can read: record it (status unhealthy
        until acknowledged), flush every primer key with the transaction it is in, and read
        on after that transaction (GTID servers) or from the binlog's end now (file+position:
        the flush, published after that position was read, covers everything before it)."""
        where = self._where()
        metrics.UNDECODABLE_EVENTS.inc()
        log.error(
            "UNDECODABLE binlog event at %s (%s): flushing every primer key and stepping past "
            "it; `primer-cache status` is unhealthy until `primer-cache ack-undecodable`",
            where,
            exc,
            extra={"position": where},
        )
        if self._redis is None:
            self._redis = connect_redis(
                self.settings.cache.url, socket_timeout=10, socket_connect_timeout=5
            )
        # recorded before the flush goes out: a crash in between replays the event, and it
        # is recorded again; never a flush without the record
        undecodable.record(self._redis, self.settings.cache.state_prefix, where, str(exc))
        self.txn.undecodable(where, str(exc))
        if self.server.gtid_mode and self.position.current is not None:
            checkpoint = self.position.end(self.stream)
        else:
            conn = pymysql.connect(connect_timeout=5, **self.source.connect_kwargs())
            try:
                now = current_position(conn, self.server)
            finally:
                conn.close()
            self.position = StreamPosition(now, self.server)
            checkpoint = self.position.checkpoint()
        self._emit(self.txn.end(checkpoint, self._timestamp))
        with contextlib.suppress(Exception):  # the old stream is broken either way
            self.stream.close()
        if not self._stopping.is_set():
            self.stream = self._open_stream()

    def _where(self) -> str:
        if self.position.current is not None:
            return f"GTID {self.position.current}"
        return f"{self.stream.log_file}:{self.stream.log_pos}"

    def _touches_watched(self, query: str, schema: str) -> bool:
        """Whether a statement names a watched table of our database, or drops our database
        (safe side: a statement naming the table in another database also counts when ours
        is named)."""
        lowered = query.lower()
        database = self.settings.mysql.database.lower()
        if schema.lower() != database and database not in lowered:
            return False
        if re.search(rf"\b(database|schema)\b.*{re.escape(database)}", lowered, re.DOTALL):
            return True  # DROP DATABASE, ALTER DATABASE ...: the tables may go with it
        return any(
            re.search(rf"(^|[^a-z0-9_$]){re.escape(table.lower())}($|[^a-z0-9_$])", lowered)
            for table in self.tables
        )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value or "")
