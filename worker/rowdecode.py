"""Row events decoded only as far as the listener needs them.

python-mysql-replication decodes every column of every row image in pure Python, JSON
included (MySQL's binary JSON costs 0.4 ms per 384-dimension embedding). The listener needs
far less: the few key columns an element image is made of, and, for an update, whether any
column outside the ignored ones changed. So this decoder walks each row image once, from a
plan built from the table map, and:

- decodes only the key columns (VARCHAR/CHAR, ENUM, DECIMAL, integers), as the library does;
- slices every other column as raw bytes and compares before against after image: equal
  bytes are equal values (decoding is a function of the bytes), unequal bytes count as a
  change (at worst one needless invalidation, never a missed one). JSON, TEXT and BLOB are
  never parsed, only skipped by their length prefix.

A table or event whose shape the plan does not cover (a column type it cannot size, a key
column of a type it does not decode, a partial JSON update) goes to the library's own
decoding instead: `decode()` returns None, the caller falls back and counts it.

An event the plan covers but whose bytes do not walk (a row image that overruns the event, a
last row that does not end exactly where the event ends, a key value that does not decode)
raises Undecodable: the plan mis-sized a column (say, the pre-10.1 temporal format, whose
widths differ), and rows read that way would be garbage. Its bytes are consumed, so the
library cannot try again: the listener flushes and steps past the event.

One module, over 300 lines, because it is one thing: the layout, the plan and the column
readers are the decoder's parts and are only used together (and mutation-tested together).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent

from core.changes import visible_change

# Fixed widths, in bytes, of the column types whose width does not depend on metadata.
_FIXED = {
    FIELD_TYPE.TINY: 1,
    FIELD_TYPE.SHORT: 2,
    FIELD_TYPE.INT24: 3,
    FIELD_TYPE.LONG: 4,
    FIELD_TYPE.LONGLONG: 8,
    FIELD_TYPE.FLOAT: 4,
    FIELD_TYPE.DOUBLE: 8,
    FIELD_TYPE.YEAR: 1,
    FIELD_TYPE.DATE: 3,
    FIELD_TYPE.TIME: 3,
    FIELD_TYPE.DATETIME: 8,
    FIELD_TYPE.TIMESTAMP: 4,
}
_INTEGERS = {
    FIELD_TYPE.TINY: 1,
    FIELD_TYPE.SHORT: 2,
    FIELD_TYPE.INT24: 3,
    FIELD_TYPE.LONG: 4,
    FIELD_TYPE.LONGLONG: 8,
}
_PREFIXED = (FIELD_TYPE.BLOB, FIELD_TYPE.JSON, FIELD_TYPE.GEOMETRY)
_FSP_BYTES = (0, 1, 1, 2, 2, 3, 3)  # fractional-second digits -> bytes (TIME2 & co.)
_DECIMAL_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)  # leftover digits (of 9) -> bytes
_PARTIAL_UPDATE = BINLOG.PARTIAL_UPDATE_ROWS_EVENT

# A decoded value reader: (row bytes, start, end) -> the library's value for the column.
Reader = Any


class Undecodable(ValueError):
    """Raised when a row event's bytes do not walk as its plan says (see the module doc)."""


class Unsupported(Exception):
    """Raised while planning when a table's shape is outside what the decoder covers."""


class Slot(NamedTuple):
    """One column in a plan: how to find its end, and what to do with its bytes."""

    name: str
    width: int  # fixed width in bytes, or 0 when the value is length-prefixed
    prefix: int  # length-prefix size in bytes (0 for fixed-width columns)
    reader: Reader | None  # decodes a key column; None: compared as raw bytes
    compared: bool  # outside the ignored columns: a change to it is a visible change


class Layout:
    """The columns one columns-present bitmap includes (all of them under a FULL image),
    and what to do with each."""

    def __init__(self, slots: tuple[Slot, ...]) -> None:
        self.slots = slots
        self.widths = tuple((slot.width, slot.prefix) for slot in slots)
        self.nulls_len = (len(slots) + 7) >> 3
        self.keys = tuple(
            (k, slot.name, slot.prefix, slot.reader)
            for k, slot in enumerate(slots)
            if slot.reader is not None
        )
        self.compared = tuple((k, slot.name) for k, slot in enumerate(slots) if slot.compared)
        self.compared_mask = sum(1 << k for k, _ in self.compared)
        # Runs of consecutive compared columns, (first, last + 1): with the same NULLs, two
        # images agree on a run's columns exactly when they agree on the run's bytes (each
        # value is fixed-width or carries its length, so a run splits one way only).
        runs: list[tuple[int, int]] = []
        for k, _ in self.compared:
            if runs and runs[-1][1] == k:
                runs[-1] = (runs[-1][0], k + 1)
            else:
                runs.append((k, k + 1))
        self.runs = tuple(runs)

    def walk(self, data: bytes, pos: int) -> tuple[int, list[int]]:
        """The NULL bits of the image at `pos`, and where each of its columns starts (one
        more entry: where the image ends). Values are skipped, never read."""
        nulls = int.from_bytes(data[pos : pos + self.nulls_len], "little")
        pos += self.nulls_len
        starts = [pos]
        append = starts.append
        bit = 1
        for width, prefix in self.widths:
            if not nulls & bit:
                if prefix:
                    pos += prefix + int.from_bytes(data[pos : pos + prefix], "little")
                else:
                    pos += width
            append(pos)
            bit <<= 1
        if pos > len(data):
            raise Undecodable(f"a row image overruns its event ({pos} > {len(data)} bytes)")
        return nulls, starts

    def key_values(self, data: bytes, nulls: int, starts: list[int]) -> dict[str, Any]:
        return {
            name: None if nulls >> k & 1 else reader(data, starts[k] + prefix, starts[k + 1])
            for k, name, prefix, reader in self.keys
        }

    def raw_values(self, data: bytes, nulls: int, starts: list[int]) -> dict[str, bytes | None]:
        return {
            name: None if nulls >> k & 1 else data[starts[k] : starts[k + 1]]
            for k, name in self.compared
        }


class Plan:
    """How to walk the row images of one table map."""

    def __init__(self, columns: Sequence[Any], keys: Collection[str], ignored: Collection[str]):
        self.slots = tuple(_slot(column, keys, ignored) for column in columns)
        self._layouts: dict[bytes, Layout] = {}

    def layout(self, bitmap: bytes) -> Layout:
        """The layout of the images a columns-present bitmap describes (memoised)."""
        layout = self._layouts.get(bitmap)
        if layout is None:
            layout = Layout(
                tuple(s for i, s in enumerate(self.slots) if bitmap[i >> 3] & (1 << (i & 7)))
            )
            self._layouts[bitmap] = layout
        return layout


class DecodedRow(NamedTuple):
    """One row of an event: key columns of each image (None: no such image), and for an
    update whether a compared column changed (always True for inserts and deletes). The
    key columns of an update nobody sees (visible False) are not decoded: both are {}."""

    before: dict[str, Any] | None
    after: dict[str, Any] | None
    visible: bool


class RowDecoder:
    """Decodes row events with a plan per table shape; see the module docstring."""

    def __init__(self, keys: Mapping[str, Collection[str]], ignored: Collection[str]) -> None:
        self.keys = {table: frozenset(names) for table, names in keys.items()}
        self.ignored = frozenset(ignored)
        self._plans: dict[tuple[Any, ...], Plan | None] = {}
        # The plan of the table map in force, by table id: every row event of a statement
        # shares its table map's column list, so the shape is worked out once per map.
        self._current: dict[int, tuple[Sequence[Any], Plan | None]] = {}

    def plan(self, table: str, columns: Sequence[Any]) -> Plan | None:
        """The plan for a table map (memoised by its shape), or None when unsupported."""
        shape = (table, *(_shape(column) for column in columns))
        if shape in self._plans:
            return self._plans[shape]
        try:
            plan: Plan | None = Plan(columns, self.keys.get(table, ()), self.ignored)
        except Unsupported:
            plan = None
        self._plans[shape] = plan
        return plan

    def decode(self, event: RowsEvent) -> list[DecodedRow] | None:
        """The rows of a row event, or None (nothing read) when the library must decode it."""
        if event.event_type == _PARTIAL_UPDATE or not event.complete:
            return None
        columns = event.columns
        current = self._current.get(event.table_id)
        if current is not None and current[0] is columns:
            plan = current[1]
        else:
            plan = self.plan(event.table, columns)
            self._current[event.table_id] = (columns, plan)
        if plan is None:
            return None
        packet = event.packet
        data = packet.read(event.event_size - packet.read_bytes)
        try:
            return self.decode_rows(plan, event, data)
        except Undecodable:
            raise
        except (ValueError, IndexError, KeyError) as exc:  # a key value that does not decode
            raise Undecodable(f"a key column does not decode: {exc!r}") from exc

    def decode_rows(self, plan: Plan, event: RowsEvent, data: bytes) -> list[DecodedRow]:
        """Every row of `data`, the row bytes of `event` (after its column bitmaps); raises
        Undecodable unless the last row ends exactly where `data` does."""
        if isinstance(event, UpdateRowsEvent):
            rows, pos = self._update_rows(plan, event, data)
        else:
            rows, pos = _single_image_rows(plan, event, data)
        _ends_at(pos, len(data))
        return rows

    def _update_rows(
        self, plan: Plan, event: RowsEvent, data: bytes
    ) -> tuple[list[DecodedRow], int]:
        """The rows of an update (a before and an after image each), and where they end."""
        rows: list[DecodedRow] = []
        pos, end = 0, len(data)
        first = plan.layout(event.columns_present_bitmap)
        second = plan.layout(event.columns_present_bitmap2)
        while pos < end:
            nulls_b, starts_b = first.walk(data, pos)
            nulls_a, starts_a = second.walk(data, starts_b[-1])
            pos = starts_a[-1]
            if first is second:
                visible = bool((nulls_b ^ nulls_a) & first.compared_mask) or any(
                    data[starts_b[i] : starts_b[j]] != data[starts_a[i] : starts_a[j]]
                    for i, j in first.runs
                )
            else:  # NOBLOB: a column in one image only is a change
                visible = visible_change(
                    first.raw_values(data, nulls_b, starts_b),
                    second.raw_values(data, nulls_a, starts_a),
                    self.ignored,
                )
            if visible:
                rows.append(
                    DecodedRow(
                        first.key_values(data, nulls_b, starts_b),
                        second.key_values(data, nulls_a, starts_a),
                        True,
                    )
                )
            else:
                rows.append(DecodedRow({}, {}, False))
        return rows, pos


def _single_image_rows(plan: Plan, event: RowsEvent, data: bytes) -> tuple[list[DecodedRow], int]:
    """The rows of an insert or a delete (one image each), and where they end."""
    rows: list[DecodedRow] = []
    pos, end = 0, len(data)
    layout = plan.layout(event.columns_present_bitmap)
    deleting = isinstance(event, DeleteRowsEvent)
    while pos < end:
        nulls, starts = layout.walk(data, pos)
        pos = starts[-1]
        values = layout.key_values(data, nulls, starts)
        rows.append(DecodedRow(values, None, True) if deleting else DecodedRow(None, values, True))
    return rows, pos


def _ends_at(pos: int, end: int) -> None:
    """The last row must end exactly at the event's end: elsewhere, a column was mis-sized
    (walk() already refuses an overrun; this holds the invariant in one place)."""
    if pos != end:
        raise Undecodable(f"the last row ends at byte {pos} of an event of {end} bytes")


def _shape(column: Any) -> tuple[Any, ...]:
    """What of a column the plan depends on, as a hashable memo key."""
    enum_values = getattr(column, "enum_values", None)
    return (
        column.name,
        column.type,
        getattr(column, "max_length", None),
        getattr(column, "length_size", None),
        getattr(column, "precision", None),
        getattr(column, "decimals", None),
        getattr(column, "fsp", None),
        getattr(column, "size", None),
        getattr(column, "bytes", None),
        column.unsigned,
        column.character_set_name,
        tuple(enum_values) if enum_values is not None else None,
    )


def _slot(column: Any, keys: Collection[str], ignored: Collection[str]) -> Slot:
    name = column.name
    if not name:
        raise Unsupported("a column without a name (binlog_row_metadata is not FULL)")
    width, prefix = _width(column)
    reader = _reader(column, width, prefix) if name in keys else None
    # Key columns are compared too: a category that changed is a visible change.
    return Slot(name, width, prefix, reader, name not in ignored)


def _width(column: Any) -> tuple[int, int]:
    """(fixed width, 0) or (0, length-prefix size) of a column's value in a row image."""
    kind = column.type
    if kind in _FIXED:
        return _FIXED[kind], 0
    if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        return 0, 2 if column.max_length > 255 else 1
    if kind in _PREFIXED:
        return 0, column.length_size
    if kind == FIELD_TYPE.NEWDECIMAL:
        return _decimal_width(column.precision, column.decimals), 0
    if kind == FIELD_TYPE.TIMESTAMP2:
        return 4 + _FSP_BYTES[column.fsp], 0
    if kind == FIELD_TYPE.DATETIME2:
        return 5 + _FSP_BYTES[column.fsp], 0
    if kind == FIELD_TYPE.TIME2:
        return 3 + _FSP_BYTES[column.fsp], 0
    if kind in (FIELD_TYPE.ENUM, FIELD_TYPE.SET):
        return column.size, 0
    if kind == FIELD_TYPE.BIT:
        return column.bytes, 0
    raise Unsupported(f"column {column.name!r} has type {kind}, which the decoder cannot size")


def _decimal_width(precision: int, decimals: int) -> int:
    integral = precision - decimals
    return (
        (integral // 9) * 4
        + _DECIMAL_BYTES[integral % 9]
        + (decimals // 9) * 4
        + _DECIMAL_BYTES[decimals % 9]
    )


def _reader(column: Any, width: int, prefix: int) -> Reader:
    """A decoder for a key column, equal to the library's for the same bytes."""
    kind = column.type
    if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING, FIELD_TYPE.BLOB):
        encoding = (
            RowsEvent.charset_to_encoding(column.character_set_name)
            if column.character_set_name is not None
            else "utf-8"
        )
        try:
            "".encode(encoding)
        except LookupError:
            raise Unsupported(f"column {column.name!r} has charset {encoding!r}") from None
        return lambda data, start, stop: data[start:stop].decode(encoding)
    if kind == FIELD_TYPE.ENUM:
        values = column.enum_values
        if not values:
            return lambda data, start, stop: None
        return lambda data, start, stop: values[int.from_bytes(data[start:stop], "little")]
    if kind in _INTEGERS:
        signed = not column.unsigned
        return lambda data, start, stop: int.from_bytes(data[start:stop], "little", signed=signed)
    if kind == FIELD_TYPE.NEWDECIMAL:
        precision, decimals = column.precision, column.decimals
        return lambda data, start, stop: _decimal(data[start:stop], precision, decimals)
    raise Unsupported(f"key column {column.name!r} has type {kind}, which the decoder cannot read")


def _decimal(raw: bytes, precision: int, decimals: int) -> Decimal:
    """MySQL's packed DECIMAL: groups of 9 digits in 4 big-endian bytes, the leftover
    digits in fewer; the sign in the top bit, negatives stored inverted."""
    negative = not raw[0] & 0x80
    mask = 0xFF if negative else 0
    data = bytes(b ^ mask for b in raw)
    data = bytes([data[0] ^ 0x80]) + data[1:]
    integral = precision - decimals
    parts = ["-" if negative else ""]
    pos = 0
    lead = _DECIMAL_BYTES[integral % 9]
    if lead:
        parts.append(str(int.from_bytes(data[pos : pos + lead], "big")))
        pos += lead
    for _ in range(integral // 9):
        parts.append(f"{int.from_bytes(data[pos : pos + 4], 'big'):09d}")
        pos += 4
    parts.append(".")
    for _ in range(decimals // 9):
        parts.append(f"{int.from_bytes(data[pos : pos + 4], 'big'):09d}")
        pos += 4
    tail = _DECIMAL_BYTES[decimals % 9]
    if tail:
        parts.append(f"{int.from_bytes(data[pos : pos + tail], 'big'):0{decimals % 9}d}")
    return Decimal("".join(parts))
