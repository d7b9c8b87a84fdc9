"""The binlog reader's position: where the stream has got to, transaction by transaction."""

from __future__ import annotations

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.gtid import GtidSet

from core.gtid import mariadb_gtids
from core.position import FilePosition, GtidPosition, Position
from worker.server_check import ServerInfo


class StreamPosition:
    """The GTID state (or file and offset) after the last whole transaction read, and the
    GTID of the transaction being read."""

    def __init__(self, start: Position, server: ServerInfo) -> None:
        self.server = server
        self.file = start.file if isinstance(start, FilePosition) else None
        self.pos = start.pos if isinstance(start, FilePosition) else None
        self.gtid_set = start.gtid if isinstance(start, GtidPosition) else ""
        # MariaDB: domain id -> last complete GTID
        self.domains = mariadb_gtids(self.gtid_set) if server.is_mariadb else {}
        self.current: str | None = None

    def begin(self, gtid: str) -> None:
        self.current = gtid

    def end(self, stream: BinLogStreamReader) -> Position:
        """Record the end of the current transaction; return the checkpoint after it."""
        if self.current is not None:
            if self.server.is_mariadb:
                self.domains[self.current.split("-", 1)[0]] = self.current
                if len(self.domains) == 1:
                    self.gtid_set = self.current
                else:
                    self.gtid_set = ",".join(self.domains[d] for d in sorted(self.domains, key=int))
            else:
                self.gtid_set = str(GtidSet(self.gtid_set) + GtidSet(self.current))
            self.current = None
        self.file, self.pos = stream.log_file, stream.log_pos
        return self.checkpoint()

    def checkpoint(self) -> Position:
        if self.server.gtid_mode:
            return GtidPosition(self.gtid_set)
        return FilePosition(str(self.file), int(self.pos or 0))
