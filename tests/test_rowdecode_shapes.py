"""The row decoder against python-mysql-replication on the shapes test_rowdecode's reference
schema never produces: every integer width, CHAR and VARCHAR in charsets beyond utf8mb4,
DATE, YEAR, SET, BIT, FLOAT, adjacent columns of one width swapping a NULL (the bytes of the
two images are then equal: only the NULL bitmaps tell the change), partial JSON updates and
charsets Python cannot decode. Byte level (synthetic events), then the real MariaDB binlog.
"""

from __future__ import annotations

import datetime
import itertools
import random
from decimal import Decimal
from typing import Any

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.event import MariadbGtidEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from tests.binlog_rows import bitmap, column, encode_image, synthetic_event
from tests.test_rowdecode import _check, _decode, _rows_present
from worker.rowdecode import RowDecoder

SET_VALUES = ["a", "b", "c", "d"]
# Text each charset can hold (a few characters outside ASCII where it has them).
CHARSET_TEXT = {
    "latin1": "aZ09 éüßÆ€",  # latin1 is cp1252 here, as MySQL's latin1 is
    "utf8mb3": "aZ éü中文",
    "ascii": "aZ09 -_",
    "cp1250": "aZ ąčšž",
    "koi8r": "aZ Жизнь",
    "sjis": "aZ 日本",
    "gbk": "aZ 中文",
}


def _int(name: str, kind: int, unsigned: bool = False) -> Any:
    return column(name, kind, unsigned=unsigned)


def _text(name: str, kind: int, charset: str, max_length: int) -> Any:
    return column(name, kind, max_length=max_length, character_set_name=charset)


# Same-width neighbours come in pairs (…a, …b): a NULL can move between them.
SHAPES = [
    _int("i8a", FIELD_TYPE.TINY),
    _int("i8b", FIELD_TYPE.TINY, unsigned=True),
    _int("i16a", FIELD_TYPE.SHORT),
    _int("i16b", FIELD_TYPE.SHORT, unsigned=True),
    _int("i24a", FIELD_TYPE.INT24, unsigned=True),
    _int("i24b", FIELD_TYPE.INT24),
    _int("i32a", FIELD_TYPE.LONG),
    _int("i32b", FIELD_TYPE.LONG),
    _int("i64a", FIELD_TYPE.LONGLONG),
    _int("i64b", FIELD_TYPE.LONGLONG, unsigned=True),
    _text("ca", FIELD_TYPE.STRING, "latin1", 10),  # CHAR(10) latin1
    _text("cb", FIELD_TYPE.STRING, "latin1", 10),
    _text("cw", FIELD_TYPE.STRING, "utf8mb3", 300),  # CHAR(100) utf8mb3: 2-byte length
    _text("vl", FIELD_TYPE.VARCHAR, "latin1", 300),
    _text("va", FIELD_TYPE.VARCHAR, "ascii", 20),
    _text("vp", FIELD_TYPE.VARCHAR, "cp1250", 20),
    _text("vk", FIELD_TYPE.VARCHAR, "koi8r", 20),
    _text("vs", FIELD_TYPE.VARCHAR, "sjis", 40),
    _text("vg", FIELD_TYPE.VARCHAR, "gbk", 40),
    column("da", FIELD_TYPE.DATE),
    column("db", FIELD_TYPE.DATE),
    column("y", FIELD_TYPE.YEAR),
    column("dec", FIELD_TYPE.NEWDECIMAL, precision=30, decimals=9),  # whole groups of 9 digits
    column("sa", FIELD_TYPE.SET, size=1, set_values=SET_VALUES),
    column("sb", FIELD_TYPE.SET, size=1, set_values=SET_VALUES),
    column("ba", FIELD_TYPE.BIT, bits=12, bytes=2),
    column("bb", FIELD_TYPE.BIT, bits=12, bytes=2),
    column("f", FIELD_TYPE.FLOAT),
]
NAMES = [c.name for c in SHAPES]
BY_NAME = {c.name: c for c in SHAPES}
# Every column the decoder can read is a key here; DATE, YEAR, SET, BIT and FLOAT it only
# sizes and compares as bytes.
KEYS = {c.name for c in SHAPES if c.type in (FIELD_TYPE.STRING, FIELD_TYPE.VARCHAR)} | {
    c.name for c in SHAPES if c.name.startswith("i")
}
PAIRS = [
    (i, i + 1)
    for i in range(len(SHAPES) - 1)
    if NAMES[i].endswith("a") and NAMES[i + 1][:-1] == NAMES[i][:-1]
]


def _bounds(col: Any) -> tuple[int, int]:
    bits = {FIELD_TYPE.TINY: 8, FIELD_TYPE.SHORT: 16, FIELD_TYPE.INT24: 24}.get(col.type, 0)
    bits = bits or (32 if col.type == FIELD_TYPE.LONG else 64)
    return (0, 2**bits - 1) if col.unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _values(col: Any) -> st.SearchStrategy[Any]:
    kind = col.type
    if col.name.startswith("i"):
        return st.integers(*_bounds(col))
    if kind in (FIELD_TYPE.STRING, FIELD_TYPE.VARCHAR):
        return st.text(st.sampled_from(CHARSET_TEXT[col.character_set_name]), max_size=8)
    if kind == FIELD_TYPE.DATE:
        return st.dates(datetime.date(1000, 1, 1), datetime.date(9999, 12, 31))
    if kind == FIELD_TYPE.YEAR:
        return st.integers(1901, 2155)
    if kind == FIELD_TYPE.SET:  # not empty: the library reads an empty set as None
        return st.sets(st.sampled_from(SET_VALUES), min_size=1)
    if kind == FIELD_TYPE.BIT:
        return st.integers(0, 2**12 - 1).map(lambda n: format(n, "012b"))
    if kind == FIELD_TYPE.NEWDECIMAL:
        return st.decimals(-(10**21) + 1, 10**21 - 1, places=9, allow_nan=False)
    if kind == FIELD_TYPE.FLOAT:  # values a FLOAT holds exactly, so the library reads them back
        return st.floats(width=32, allow_nan=False).map(float)
    raise AssertionError(kind)


rows = st.fixed_dictionaries({c.name: st.none() | _values(c) for c in SHAPES})


def _shared_value(a: Any, b: Any) -> st.SearchStrategy[Any]:
    """A value both columns of a pair write as the same bytes."""
    if a.name.startswith("i"):
        lo_a, hi_a = _bounds(a)
        lo_b, hi_b = _bounds(b)
        return st.integers(max(lo_a, lo_b), min(hi_a, hi_b))
    return _values(a)


@st.composite
def null_swaps(draw: st.DrawFn) -> tuple[dict, dict]:
    """An update that moves a NULL between two adjacent same-width columns, nothing else."""
    before = draw(rows)
    i, j = draw(st.sampled_from(PAIRS))
    value = draw(_shared_value(SHAPES[i], SHAPES[j]))
    before[NAMES[i]], before[NAMES[j]] = None, value
    after = {**before, NAMES[i]: value, NAMES[j]: None}
    return before, after


@st.composite
def updates(draw: st.DrawFn) -> tuple[dict, dict]:
    before = draw(rows)
    after = dict(before)
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=3)):
        after[name] = draw(st.none() | _values(BY_NAME[name]))
    return before, after


FULL = [True] * len(SHAPES)


def _update_both_ways(changes: list[tuple[dict, dict]], ignored: set[str]) -> None:
    data = b"".join(
        encode_image(SHAPES, FULL, before) + encode_image(SHAPES, FULL, after)
        for before, after in changes
    )
    args = ("shapes", SHAPES, data, bitmap(FULL), bitmap(FULL))
    decoder = RowDecoder({"shapes": KEYS}, ignored)
    mine = _decode(decoder, synthetic_event(UpdateRowsEvent, *args), data)
    theirs = _rows_present(synthetic_event(UpdateRowsEvent, *args), NAMES, FULL, FULL)
    _check(mine, theirs, KEYS, ignored)


@given(st.lists(null_swaps(), min_size=1, max_size=3))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_a_null_moving_between_same_width_neighbours_is_a_change(
    changes: list[tuple[dict, dict]],
) -> None:
    _update_both_ways(changes, set())


@given(st.lists(updates(), min_size=1, max_size=3), st.sets(st.sampled_from(NAMES), max_size=4))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_updates_of_every_shape_decode_as_the_library_does(
    changes: list[tuple[dict, dict]], ignored: set[str]
) -> None:
    _update_both_ways(changes, ignored)


@given(st.lists(rows, min_size=1, max_size=3), st.sampled_from([WriteRowsEvent, DeleteRowsEvent]))
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_inserts_and_deletes_of_every_shape_decode_as_the_library_does(
    values: list[dict], cls: Any
) -> None:
    data = b"".join(encode_image(SHAPES, FULL, row) for row in values)
    args = ("shapes", SHAPES, data, bitmap(FULL))
    mine = _decode(RowDecoder({"shapes": KEYS}, ()), synthetic_event(cls, *args), data)
    theirs = _rows_present(synthetic_event(cls, *args), NAMES, FULL, None)
    _check(mine, theirs, KEYS, set())


@pytest.mark.parametrize("charset", ["binary", "ucs2", "swe7"])
def test_a_key_column_in_a_charset_python_cannot_decode_falls_back(charset: str) -> None:
    """The library shows such a column as raw bytes; the decoder leaves the table to it. As
    a compared (non-key) column it is only sized, and the fast path stays."""
    col = _text("k", FIELD_TYPE.VARCHAR, charset, 20)
    assert RowDecoder({"t": {"k"}}, ()).plan("t", [col]) is None
    assert RowDecoder({"t": {"other"}}, ()).plan("t", [col]) is not None


def test_a_partial_json_update_goes_to_the_library_unread() -> None:
    """MySQL 8's PARTIAL_UPDATE_ROWS_EVENT carries JSON diffs in the after image: the decoder
    reads nothing of it and returns None (the caller decodes with the library)."""
    json_col = column("doc", FIELD_TYPE.JSON, length_size=4)
    cols = [_int("id", FIELD_TYPE.LONG), json_col]
    before = encode_image(cols, [True, True], {"id": 1, "doc": {"a": 1}})
    # value_options = PARTIAL_JSON_UPDATES, the partial-columns bitmap, then the after image
    # whose JSON is a diff (here: an opaque one; the library parses it, the decoder must not)
    after = b"\x01" + bitmap([False, True]) + encode_image(cols, [True, True], {"id": 1, "doc": 2})
    data = before + after
    event = synthetic_event(
        UpdateRowsEvent, "t", cols, data, bitmap([True] * 2), bitmap([True] * 2)
    )
    event.event_type = BINLOG.PARTIAL_UPDATE_ROWS_EVENT
    decoder = RowDecoder({"t": {"id"}}, ())
    assert decoder.plan("t", cols) is not None  # the table itself takes the fast path
    assert decoder.decode(event) is None
    assert event.packet.read_bytes == 0  # nothing consumed: the library reads it all
    event.event_type = BINLOG.UPDATE_ROWS_EVENT_V2
    event.complete = False  # a table map the library could not complete: the same
    assert decoder.decode(event) is None


def test_decode_reads_a_whole_event_as_decode_rows_does() -> None:
    row = {n: None for n in NAMES} | {"i32a": 7, "ca": "é", "dec": Decimal("1.5")}
    data = encode_image(SHAPES, FULL, row) + encode_image(SHAPES, FULL, {**row, "i32a": 8})
    event = synthetic_event(UpdateRowsEvent, "shapes", SHAPES, data, bitmap(FULL), bitmap(FULL))
    decoder = RowDecoder({"shapes": KEYS}, ())
    (decoded,) = decoder.decode(event) or []
    assert decoded.visible and (decoded.before["i32a"], decoded.after["i32a"]) == (7, 8)
    assert decoded.after["ca"] == "é"


# ---- against the real MariaDB binlog ------------------------------------------------------

MARIA_TABLE = """
CREATE TABLE shapes (
  id INT NOT NULL PRIMARY KEY,
  i8a TINYINT NULL, i8b TINYINT UNSIGNED NULL,
  i16a SMALLINT NULL, i16b SMALLINT UNSIGNED NULL,
  i24a MEDIUMINT UNSIGNED NULL, i24b MEDIUMINT NULL,
  i64a BIGINT NULL, i64b BIGINT UNSIGNED NULL,
  ca CHAR(10) CHARACTER SET latin1 NULL, cb CHAR(10) CHARACTER SET latin1 NULL,
  cw CHAR(100) CHARACTER SET utf8mb3 NULL,
  vl VARCHAR(300) CHARACTER SET latin1 NULL, vp VARCHAR(20) CHARACTER SET cp1250 NULL,
  vk VARCHAR(20) CHARACTER SET koi8r NULL, vg VARCHAR(20) CHARACTER SET gbk NULL,
  da DATE NULL, db DATE NULL, y YEAR NULL,
  sa SET('a','b','c','d') NULL, sb SET('a','b','c','d') NULL,
  ba BIT(12) NULL, bb BIT(12) NULL
) DEFAULT CHARSET=utf8mb4
"""
MARIA_KEYS = {"id", "i8a", "i8b", "i16a", "i16b", "i24a", "i24b", "i64a", "i64b"} | {
    "ca",
    "cb",
    "cw",
    "vl",
    "vp",
    "vk",
    "vg",
}
MARIA_PAIRS = [
    *(("i8a", "i8b"), ("i16a", "i16b"), ("i24a", "i24b"), ("i64a", "i64b")),
    *(("ca", "cb"), ("da", "db"), ("sa", "sb"), ("ba", "bb")),
]
_ids = itertools.count(1)  # row ids: the table outlives one example
_MARIA_COLUMNS = [n for n in NAMES if n in {n for pair in MARIA_PAIRS for n in pair}] + [
    "cw",
    "vl",
    "vp",
    "vk",
    "vg",
    "y",
]


def _sql_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name.startswith("s"):
        return ",".join(sorted(value))
    if name.startswith("b"):
        return int(value, 2)
    return value


def _maria_values(name: str) -> st.SearchStrategy[Any]:
    if name == "i64b":  # PyMySQL sends Python ints as they are
        return st.integers(0, 2**63 - 1)
    return _values(BY_NAME[name])


maria_rows = st.fixed_dictionaries({n: st.none() | _maria_values(n) for n in _MARIA_COLUMNS})


@st.composite
def maria_ops(draw: st.DrawFn) -> tuple[dict, str, tuple[str, str]]:
    row = draw(maria_rows)
    pair = draw(st.sampled_from(MARIA_PAIRS))
    row[pair[0]], row[pair[1]] = None, draw(_maria_values(pair[1]).filter(lambda v: v is not None))
    if pair[0].startswith("i"):  # a value both columns of the pair hold
        row[pair[1]] = draw(_shared_value(BY_NAME[pair[0]], BY_NAME[pair[1]]))
    return row, draw(st.sampled_from(["swap", "update", "delete"])), pair


@given(st.lists(maria_ops(), min_size=1, max_size=4))
@settings(
    max_examples=12,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_mariadb_events_of_every_shape_decode_as_the_library_does(
    mysql_params: dict[str, Any], db: pymysql.Connection, database: str, ops: list
) -> None:
    with db.cursor() as cur:
        cur.execute(MARIA_TABLE.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        start = str(cur.fetchone()[0])
        for values, action, (a, b) in ops:
            row_id = next(_ids)
            names = ", ".join(["id", *values])
            marks = ", ".join(["%s"] * (len(values) + 1))
            cur.execute(
                f"INSERT INTO shapes ({names}) VALUES ({marks})",
                (row_id, *(_sql_value(n, v) for n, v in values.items())),
            )
            if action == "swap":  # the NULL moves from a to b, the value from b to a
                cur.execute(f"UPDATE shapes SET {a} = {b}, {b} = NULL WHERE id = %s", (row_id,))
            elif action == "update":
                cur.execute(
                    "UPDATE shapes SET vl = CONCAT(COALESCE(vl, ''), 'é') WHERE id = %s", (row_id,)
                )
            else:
                cur.execute("DELETE FROM shapes WHERE id = %s", (row_id,))
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        end = str(cur.fetchone()[0])
    assert _compare_stream(mysql_params, database, start, end) >= 2 * len(ops)


def _compare_stream(mysql_params: dict[str, Any], database: str, start: str, end: str) -> int:
    """Read start..end; decode every row event of `shapes` both ways; how many compared."""
    stream = BinLogStreamReader(
        connection_settings=mysql_params,
        server_id=random.randint(10_000, 2**31),
        blocking=True,
        is_mariadb=True,
        auto_position=start,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, MariadbGtidEvent, XidEvent],
        only_schemas=[database],
        only_tables=["shapes"],
    )
    decoder = RowDecoder({"shapes": MARIA_KEYS}, ())
    compared, current = 0, ""
    try:
        for event in stream:
            if isinstance(event, MariadbGtidEvent):
                current = event.gtid
                continue
            if isinstance(event, XidEvent):
                if current == end:
                    break
                continue
            raw = event.packet.packet
            data = raw._data[
                raw._position : raw._position + event.event_size - event.packet.read_bytes
            ]
            names = [c.name for c in event.columns]
            full = [True] * len(names)
            plan = decoder.plan(event.table, event.columns)
            assert plan is not None, "every column of `shapes` must take the fast path"
            mine = decoder.decode_rows(plan, event, data)
            second = full if isinstance(event, UpdateRowsEvent) else None
            _check(mine, _rows_present(event, names, full, second), MARIA_KEYS, set())
            compared += 1
    finally:
        stream.close()
    return compared
