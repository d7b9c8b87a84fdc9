"""Row events built byte by byte, for testing the row decoder against the library's.

- `encode_value` writes a column value as MySQL writes it into a row image (the inverse of
  python-mysql-replication's `_read_column_data`), MySQL 8's binary JSON included
  (`mysql_json`): no MySQL server runs here, so these bytes stand in for its binlog.
- `synthetic_event` wraps such bytes in a real library row event object, so the library's
  own decoding (`event.rows`) runs on exactly the bytes the fast decoder reads.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Sequence
from decimal import Decimal, localcontext
from typing import Any

from pymysql.protocol import MysqlPacket
from pymysqlreplication.column import Column
from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    RowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)
from pymysqlreplication.table import Table

EVENT_TYPES = {
    WriteRowsEvent: BINLOG.WRITE_ROWS_EVENT_V2,
    UpdateRowsEvent: BINLOG.UPDATE_ROWS_EVENT_V2,
    DeleteRowsEvent: BINLOG.DELETE_ROWS_EVENT_V2,
}
_FSP_BYTES = (0, 1, 1, 2, 2, 3, 3)


def column(name: str, kind: int, **meta: Any) -> Column:
    """A table-map column as the library builds it with binlog_row_metadata=FULL."""
    defaults = {
        "name": name,
        "type": kind,
        "unsigned": False,
        "is_primary": False,
        "charset_id": None,
        "character_set_name": None,
        "collation_name": None,
        "enum_values": None,
        "set_values": None,
        "visibility": False,
    }
    return Column(**{**defaults, **meta})


# ---- MySQL binary JSON (sql-common/json_binary.cc) ---------------------------------------


def mysql_json(value: Any) -> bytes:
    """`value` in MySQL's binary JSON format: a type byte, then the value."""
    kind, body = _json_value(value, top=True)
    return bytes([kind]) + body


def _json_value(value: Any, top: bool = False) -> tuple[int, bytes]:
    if value is None:
        return 0x04, b"\x00"
    if value is True:
        return 0x04, b"\x01"
    if value is False:
        return 0x04, b"\x02"
    if isinstance(value, int):
        if -(2**15) <= value < 2**15:
            return 0x05, struct.pack("<h", value)
        if -(2**31) <= value < 2**31:
            return 0x07, struct.pack("<i", value)
        if -(2**63) <= value < 2**63:
            return 0x09, struct.pack("<q", value)
        return 0x0A, struct.pack("<Q", value)
    if isinstance(value, float):
        return 0x0B, struct.pack("<d", value)
    if isinstance(value, str):
        raw = value.encode()
        return 0x0C, _varlen(len(raw)) + raw
    if isinstance(value, list):
        return _container(None, value)
    if isinstance(value, dict):
        return _container([k.encode() for k in value], list(value.values()))
    raise TypeError(f"no binary JSON for {value!r}")


def _varlen(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _container(keys: list[bytes] | None, values: list[Any]) -> tuple[int, bytes]:
    """An array (keys None) or object, in the small format when it fits, else large."""
    for small in (True, False):
        body = _container_body(keys, values, small)
        if body is not None:
            kind = (0x02 if keys is None else 0x00) + (0 if small else 1)
            return kind, body
    raise ValueError("JSON value too large")


def _container_body(keys: list[bytes] | None, values: list[Any], small: bool) -> bytes | None:
    offset_size = 2 if small else 4
    limit = 2 ** (8 * offset_size)
    count = len(values)
    header = 2 * offset_size + count * (1 + offset_size)
    if keys is not None:
        header += count * (offset_size + 2)
    pack = (lambda n: struct.pack("<H", n)) if small else (lambda n: struct.pack("<I", n))
    tail = bytearray()
    key_entries = bytearray()
    if keys is not None:
        for key in keys:
            key_entries += pack(header + len(tail)) + struct.pack("<H", len(key))
            tail += key
    value_entries = bytearray()
    for value in values:
        kind, body = _json_value(value)
        inline = kind in (0x04, 0x05, 0x06) or (not small and kind in (0x07, 0x08))
        if inline:
            value_entries += bytes([kind]) + body.ljust(offset_size, b"\x00")
        else:
            value_entries += bytes([kind]) + pack(header + len(tail))
            tail += body
    size = header + len(tail)
    if size >= limit or count >= limit:
        return None
    return pack(count) + pack(size) + bytes(key_entries) + bytes(value_entries) + bytes(tail)


# ---- column values as row-image bytes -----------------------------------------------------


def encode_value(col: Column, value: Any) -> bytes:
    """A non-NULL value of `col` as a row image carries it."""
    kind = col.type
    if kind in (FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.INT24, FIELD_TYPE.LONG):
        width = {FIELD_TYPE.TINY: 1, FIELD_TYPE.SHORT: 2, FIELD_TYPE.INT24: 3}.get(kind, 4)
        return int(value).to_bytes(width, "little", signed=not col.unsigned)
    if kind == FIELD_TYPE.LONGLONG:
        return int(value).to_bytes(8, "little", signed=not col.unsigned)
    if kind == FIELD_TYPE.DOUBLE:
        return struct.pack("<d", value)
    if kind == FIELD_TYPE.FLOAT:
        return struct.pack("<f", value)
    if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        raw = value.encode(_encoding(col)) if isinstance(value, str) else value
        return len(raw).to_bytes(2 if col.max_length > 255 else 1, "little") + raw
    if kind == FIELD_TYPE.BLOB:
        raw = value.encode() if isinstance(value, str) else value
        return len(raw).to_bytes(col.length_size, "little") + raw
    if kind == FIELD_TYPE.JSON:
        raw = mysql_json(value)
        return len(raw).to_bytes(col.length_size, "little") + raw
    if kind == FIELD_TYPE.ENUM:
        return int(value).to_bytes(col.size, "little")
    if kind == FIELD_TYPE.NEWDECIMAL:
        return encode_decimal(value, col.precision, col.decimals)
    if kind == FIELD_TYPE.TIMESTAMP2:
        seconds, micro = value
        return seconds.to_bytes(4, "big") + _fsp(micro, col.fsp)
    if kind == FIELD_TYPE.DATETIME2:
        return _datetime2(value) + _fsp(value.microsecond, col.fsp)
    if kind == FIELD_TYPE.DATE:
        return (value.day | value.month << 5 | value.year << 9).to_bytes(3, "little")
    if kind == FIELD_TYPE.YEAR:
        return (value - 1900).to_bytes(1, "little")
    if kind == FIELD_TYPE.SET:  # a set of the column's values: the bit of each
        mask = sum(1 << col.set_values.index(member) for member in value)
        return mask.to_bytes(col.size, "little")
    if kind == FIELD_TYPE.BIT:  # as the library shows it: '0'/'1' digits, most significant first
        return int(value, 2).to_bytes(col.bytes, "big")
    raise TypeError(f"no encoder for column type {kind}")


def _encoding(col: Column) -> str:
    """The Python codec of a string column's charset, as the library maps it."""
    if col.character_set_name is None:
        return "utf-8"
    return str(RowsEvent.charset_to_encoding(col.character_set_name))


def encode_decimal(value: Decimal, precision: int, decimals: int) -> bytes:
    """MySQL's packed DECIMAL(precision, decimals)."""
    sizes = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
    integral = precision - decimals
    with localcontext() as ctx:
        ctx.prec = 100
        sign, digits, exponent = value.quantize(Decimal(1).scaleb(-decimals)).as_tuple()
    text = "".join(map(str, digits)).rjust(precision, "0")
    assert isinstance(exponent, int) and len(text) == precision, (value, precision, decimals)
    whole, frac = text[:integral], text[integral:]
    out = bytearray()
    lead = integral % 9
    if lead:
        out += int(whole[:lead]).to_bytes(sizes[lead], "big")
    for i in range(lead, integral, 9):
        out += int(whole[i : i + 9]).to_bytes(4, "big")
    for i in range(0, decimals - decimals % 9, 9):
        out += int(frac[i : i + 9]).to_bytes(4, "big")
    if decimals % 9:
        out += int(frac[decimals - decimals % 9 :]).to_bytes(sizes[decimals % 9], "big")
    out[0] ^= 0x80
    if sign:
        out = bytearray(b ^ 0xFF for b in out)
    return bytes(out)


def _datetime2(value: datetime.datetime) -> bytes:
    packed = (
        (1 << 39)
        | (value.year * 13 + value.month) << 22
        | value.day << 17
        | value.hour << 12
        | value.minute << 6
        | value.second
    )
    return packed.to_bytes(5, "big")


def _fsp(microsecond: int, fsp: int) -> bytes:
    width = _FSP_BYTES[fsp]
    if not width:
        return b""
    digits = microsecond // 10 ** (6 - fsp)
    stored = digits * 10 if fsp % 2 else digits  # odd precisions keep one spare digit
    return stored.to_bytes(width, "big")


def bitmap(flags: Sequence[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def encode_image(columns: Sequence[Column], present: Sequence[bool], values: dict) -> bytes:
    """One row image: the NULL bitmap of the present columns, then their non-NULL values."""
    shown = [(col, values[col.name]) for col, there in zip(columns, present, strict=True) if there]
    nulls = bitmap([value is None for _, value in shown])
    return nulls + b"".join(encode_value(col, value) for col, value in shown if value is not None)


def synthetic_event(
    cls: type[RowsEvent],
    table: str,
    columns: list[Column],
    data: bytes,
    present: bytes,
    present2: bytes | None = None,
) -> RowsEvent:
    """A library row event over `data` (the row images), as if read off the binlog."""
    wrapper = BinLogPacketWrapper.__new__(BinLogPacketWrapper)
    wrapper.read_bytes = 0
    wrapper._BinLogPacketWrapper__data_buffer = b""  # type: ignore[attr-defined]
    wrapper.packet = MysqlPacket(data, "utf8")
    event = cls.__new__(cls)
    event.packet = wrapper
    event.event_size = len(data)
    event.event_type = EVENT_TYPES[cls]  # type: ignore[index]
    event.table_id = 1
    event.table_map = {1: Table(1, "scratch", table, columns)}
    event.schema, event.table, event.columns = "scratch", table, columns
    event.complete = True
    event._ignore_decode_errors = False
    event._ctl_connection = None
    event._RowsEvent__rows = None  # type: ignore[attr-defined]
    event._RowsEvent__none_sources = {}  # type: ignore[attr-defined]
    event._RowsEvent__use_column_name_cache = False  # type: ignore[attr-defined]
    event._RowsEvent__enable_logging = False  # type: ignore[attr-defined]
    event.columns_present_bitmap = present
    if present2 is not None:
        event.columns_present_bitmap2 = present2
    return event
