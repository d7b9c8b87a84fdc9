"""The faults the listener recovers from by reconnecting and resuming from its checkpoint."""

from __future__ import annotations

import pymysql
import redis
from kombu.exceptions import OperationalError as BrokerError

TRANSIENT = (
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    BrokerError,
    OSError,  # ConnectionError and socket errors included
)
BINLOG_GONE = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG: purged, or a GTID the server lacks


class ReaderError(Exception):
    """Raised when the binlog reader stopped on something other than a connection fault."""


def binlog_gone(exc: BaseException) -> bool:
    """Whether the server refused the stream's position (the checkpoint cannot be resumed)."""
    return isinstance(exc, pymysql.err.OperationalError) and exc.args[:1] == (BINLOG_GONE,)


class ReaderStopped(Exception):
    """Raised inside the reader thread when the library tries to reconnect after stop()."""
