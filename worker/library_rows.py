"""What python-mysql-replication decodes itself: the stream's next event, and the rows of an
event the row decoder (worker.rowdecode) does not cover. Both raise Undecodable when the
library cannot read the bytes; a connection fault goes through as it is (the listener
reconnects from its checkpoint)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent

from core.changes import Row
from worker.faults import ReaderStopped
from worker.rowdecode import Undecodable

_MISSING = "cols_bitmap"  # none_sources tag: the column is not in this row image (NOBLOB)

# The connection's faults. Anything else the library raises while reading an event is about
# the event's bytes.
_CONNECTION_FAULTS = (pymysql.err.Error, OSError, ReaderStopped)

# (before, after, visible): visible None, the images tell (worker.batcher.TransactionBuilder)
LibraryRow = tuple[Row | None, Row | None, None]


def next_event(events: Iterator[Any]) -> Any:
    """The stream's next event (None: it ended); Undecodable when the library cannot parse it
    (MariaDB's COMPRESSED columns fail in the table map, for one)."""
    try:
        return next(events)
    except StopIteration:
        return None
    except _CONNECTION_FAULTS:
        raise
    except Exception as exc:
        raise Undecodable(f"python-mysql-replication cannot read the event: {exc!r}") from exc


def library_rows(event: Any) -> list[LibraryRow]:
    """The row changes of an event, as the library decodes them (without the columns a
    NOBLOB image does not carry)."""
    rows = _rows(event)
    if isinstance(event, UpdateRowsEvent):
        return [
            (
                _present(row["before_values"], row.get("before_none_sources")),
                _present(row["after_values"], row.get("after_none_sources")),
                None,
            )
            for row in rows
        ]
    images = [_present(row["values"], row.get("none_sources")) for row in rows]
    if isinstance(event, WriteRowsEvent):
        return [(None, values, None) for values in images]
    return [(values, None, None) for values in images]


def _rows(event: Any) -> list[dict[str, Any]]:
    """The library's rows of an event; Undecodable when it cannot read them (the pre-10.1
    temporal format trips an assertion in it)."""
    try:
        return list(event.rows)
    except _CONNECTION_FAULTS:
        raise
    except Exception as exc:
        raise Undecodable(f"python-mysql-replication cannot read the rows: {exc!r}") from exc


def _present(values: dict[str, Any], none_sources: dict[str, str] | None) -> dict[str, Any]:
    """The row image without the columns it does not carry (binlog_row_image=NOBLOB)."""
    if not none_sources or _MISSING not in none_sources.values():
        return values
    return {name: value for name, value in values.items() if none_sources.get(name) != _MISSING}
