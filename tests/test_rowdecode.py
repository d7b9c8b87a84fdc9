"""The fast row decoder against python-mysql-replication's own decoding.

Byte level: random rows of every column type of the reference schema (MySQL 8's shapes,
binary JSON included), encoded as MySQL writes them, decoded by both. Binlog level: random
rows written to the real MariaDB, the same events decoded by both.
"""

from __future__ import annotations

import datetime
import random
from decimal import Decimal
from typing import Any

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysqlreplication import BinLogStreamReader, json_binary, packet
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.event import MariadbGtidEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from core.changes import visible_change
from tests.binlog_rows import (
    bitmap,
    column,
    encode_image,
    mysql_json,
    synthetic_event,
)
from tests.services import unique
from worker.rowdecode import DecodedRow, RowDecoder, Undecodable, _decimal

ENUMS = {
    "chunk_type": ["rule", "function", "section", "example"],
    "enforcement_level": ["required", "recommended", "optional"],
    "criticality": ["critical", "high", "medium", "low"],
    "approval_status": ["pending", "approved", "rejected"],
}
UTF8 = "utf8mb4"


def _varchar(name: str, chars: int) -> Any:
    return column(name, FIELD_TYPE.VARCHAR, max_length=chars * 4, character_set_name=UTF8)


def _enum(name: str) -> Any:
    return column(
        name, FIELD_TYPE.ENUM, size=1, enum_values=["", *ENUMS[name]], character_set_name=UTF8
    )


# megamind_chunks (sql/schema.sql) as a MySQL 8 table map describes it, plus the analytics
# table's DATETIME: every column type of the reference schema.
CHUNKS = [
    _varchar("chunk_id", 50),
    _varchar("realm_id", 50),
    column("content", FIELD_TYPE.BLOB, length_size=2, character_set_name=UTF8),
    _varchar("source_document", 255),
    _varchar("section_path", 500),
    _enum("chunk_type"),
    column("embedding", FIELD_TYPE.JSON, length_size=4),
    _varchar("element_category", 50),
    _varchar("element_subcategory", 100),
    column("priority_score", FIELD_TYPE.NEWDECIMAL, precision=3, decimals=2),
    _enum("enforcement_level"),
    _enum("criticality"),
    column("applies_to", FIELD_TYPE.JSON, length_size=4),
    column("tags", FIELD_TYPE.JSON, length_size=4),
    _enum("approval_status"),
    column("created_at", FIELD_TYPE.TIMESTAMP2, fsp=0),
    column("updated_at", FIELD_TYPE.TIMESTAMP2, fsp=0),
    column("last_accessed", FIELD_TYPE.TIMESTAMP2, fsp=3),
    column("access_count", FIELD_TYPE.LONG),
    column("access_timestamp", FIELD_TYPE.DATETIME2, fsp=6),
]
NAMES = [c.name for c in CHUNKS]
BLOBS = {"content", "embedding", "applies_to", "tags"}  # what binlog_row_image=NOBLOB may omit
PRODUCTION_KEYS = {"realm_id", "element_category", "priority_score", "enforcement_level"}
# The test decodes more columns than production needs, so every reader is exercised.
TEST_KEYS = PRODUCTION_KEYS | {"chunk_id", "content", "chunk_type", "access_count"}

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
embeddings = st.lists(st.floats(-1, 1, width=32).map(float), min_size=0, max_size=16)


def _values_for(col: Any) -> st.SearchStrategy[Any]:
    kind = col.type
    if kind == FIELD_TYPE.VARCHAR:
        return st.sampled_from(["GLOBAL", "security", "x"]) | text
    if kind == FIELD_TYPE.BLOB:
        return text
    if kind == FIELD_TYPE.JSON:
        return embeddings | json_values
    if kind == FIELD_TYPE.ENUM:
        return st.integers(0, len(col.enum_values) - 1)
    if kind == FIELD_TYPE.NEWDECIMAL:
        return st.decimals(Decimal("-9.99"), Decimal("9.99"), places=2)
    if kind == FIELD_TYPE.TIMESTAMP2:
        return st.tuples(
            st.integers(0, 2**31 - 1), st.just(0) | st.integers(0, 999).map(lambda ms: ms * 1000)
        )
    if kind == FIELD_TYPE.DATETIME2:
        return st.datetimes(datetime.datetime(1000, 1, 1))
    if kind == FIELD_TYPE.LONG:
        return st.integers(-(2**31), 2**31 - 1)
    raise AssertionError(kind)


def _value(col: Any) -> st.SearchStrategy[Any]:
    return st.none() | _values_for(col)


rows = st.fixed_dictionaries({col.name: _value(col) for col in CHUNKS})


@st.composite
def updates(draw: st.DrawFn) -> tuple[dict, dict]:
    """A before row and an after row that differs in a few columns (often only ignored ones)."""
    before = draw(rows)
    after = dict(before)
    for name in draw(st.lists(st.sampled_from([c.name for c in CHUNKS]), max_size=3)):
        after[name] = draw(_value(next(c for c in CHUNKS if c.name == name)))
    return before, after


presence = st.lists(st.booleans(), min_size=len(BLOBS), max_size=len(BLOBS)).map(
    lambda flags: [col.name not in BLOBS or flags[sorted(BLOBS).index(col.name)] for col in CHUNKS]
)
ignored_sets = st.sets(st.sampled_from([c.name for c in CHUNKS]), max_size=6)


def _strict(values: dict[str, Any]) -> dict[str, str]:
    """Values compared by type and representation: 1 and 1.0, 0.0 and -0.0, dicts in
    another key order are different bytes in a row image, so a byte compare calls them
    different (a needless invalidation, the safe side)."""
    return {name: repr(value) for name, value in values.items()}


def _check(
    decoded: list[DecodedRow], library: list[tuple], keys: set[str], ignored: set[str]
) -> None:
    assert len(decoded) == len(library)
    for got, (before, after) in zip(decoded, library, strict=True):
        if before is not None and after is not None:
            # Completeness: every change the library sees, the decoder sees.
            if visible_change(before, after, ignored):
                assert got.visible
            assert got.visible == visible_change(_strict(before), _strict(after), ignored)
            if not got.visible:
                assert (got.before, got.after) == ({}, {})  # noise: keys not even decoded
                continue
        else:
            assert got.visible
        for mine, theirs in ((got.before, before), (got.after, after)):
            if theirs is None:
                assert mine is None
            else:
                assert mine == {k: v for k, v in theirs.items() if k in keys}


def _decode(decoder: RowDecoder, event: Any, data: bytes) -> list[DecodedRow]:
    plan = decoder.plan(event.table, event.columns)
    assert plan is not None
    return decoder.decode_rows(plan, event, data)


@given(st.lists(updates(), min_size=1, max_size=3), presence, presence, ignored_sets)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_updates_decode_as_the_library_does(
    changes: list[tuple[dict, dict]], first: list[bool], second: list[bool], ignored: set[str]
) -> None:
    data = b"".join(
        encode_image(CHUNKS, first, before) + encode_image(CHUNKS, second, after)
        for before, after in changes
    )
    args = ("megamind_chunks", CHUNKS, data, bitmap(first), bitmap(second))
    decoder = RowDecoder({"megamind_chunks": TEST_KEYS}, ignored)
    mine = _decode(decoder, synthetic_event(UpdateRowsEvent, *args), data)
    theirs = _rows_present(synthetic_event(UpdateRowsEvent, *args), NAMES, first, second)
    _check(mine, theirs, TEST_KEYS, ignored)


@given(
    st.lists(rows, min_size=1, max_size=3),
    presence,
    st.sampled_from([WriteRowsEvent, DeleteRowsEvent]),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_inserts_and_deletes_decode_as_the_library_does(
    values: list[dict], present: list[bool], cls: Any
) -> None:
    data = b"".join(encode_image(CHUNKS, present, row) for row in values)
    args = ("megamind_chunks", CHUNKS, data, bitmap(present))
    decoder = RowDecoder({"megamind_chunks": TEST_KEYS}, ())
    mine = _decode(decoder, synthetic_event(cls, *args), data)
    theirs = _rows_present(synthetic_event(cls, *args), NAMES, present, None)
    _check(mine, theirs, TEST_KEYS, set())


@given(json_values | embeddings)
def test_the_json_encoder_writes_what_the_library_reads(value: Any) -> None:
    # The encoder stands in for MySQL: check it against the library's parser, the reader
    # of record (which returns strings and object keys as bytes).
    raw = mysql_json(value)

    def keyed(v: Any) -> Any:
        if isinstance(v, dict):
            return {k.encode(): keyed(x) for k, x in v.items()}
        if isinstance(v, list):
            return [keyed(x) for x in v]
        if isinstance(v, str):
            return v.encode()
        return v

    assert json_binary.parse_json(raw[0], raw[1:]) == keyed(value)


def test_unchanged_binary_json_is_never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A read bump: FULL image, two 384-dimension embeddings, only access_count changes.
    row = {c.name: None for c in CHUNKS}
    row.update(
        chunk_id="c1",
        realm_id="GLOBAL",
        embedding=[random.uniform(-1, 1) for _ in range(384)],
        applies_to={"languages": ["python"]},
        access_count=1,
    )
    bumped = {**row, "access_count": 2}
    full = [True] * len(CHUNKS)
    data = encode_image(CHUNKS, full, row) + encode_image(CHUNKS, full, bumped)

    def no_parsing(*_: Any) -> Any:
        raise AssertionError("binary JSON was parsed")

    monkeypatch.setattr(packet, "parse_json", no_parsing)
    event = synthetic_event(
        UpdateRowsEvent, "megamind_chunks", CHUNKS, data, bitmap(full), bitmap(full)
    )
    decoder = RowDecoder({"megamind_chunks": PRODUCTION_KEYS}, {"access_count"})
    (decoded,) = _decode(decoder, event, data)
    assert decoded == (({}, {}, False))


@st.composite
def decimal_columns(draw: st.DrawFn) -> tuple[tuple[int, int], Decimal]:
    precision = draw(st.integers(1, 65))
    decimals = draw(st.integers(0, min(precision, 30)))
    digits = draw(st.integers(-(10**precision) + 1, 10**precision - 1))
    return (precision, decimals), Decimal(f"{digits}E-{decimals}")  # exact: no context rounding


@given(decimal_columns())
def test_decimals_of_every_precision(case: tuple[tuple[int, int], Decimal]) -> None:
    (precision, decimals), value = case
    col = column("d", FIELD_TYPE.NEWDECIMAL, precision=precision, decimals=decimals)
    data = encode_image([col], [True], {"d": value})
    event = synthetic_event(WriteRowsEvent, "t", [col], data, bitmap([True]))
    (row,) = event.rows
    assert row["values"]["d"] == value
    assert _decimal(data[1:], precision, decimals) == value


def test_unsupported_shapes_fall_back() -> None:
    decoder = RowDecoder({"t": {"k"}}, ())
    # a key column of a type the decoder does not read
    assert decoder.plan("t", [column("k", FIELD_TYPE.DOUBLE)]) is None
    # a column type it cannot size
    assert (
        decoder.plan(
            "t",
            [column("k", FIELD_TYPE.VARCHAR, max_length=10), column("x", FIELD_TYPE.VAR_STRING)],
        )
        is None
    )
    # no column names (binlog_row_metadata is not FULL)
    assert decoder.plan("t", [column(None, FIELD_TYPE.LONG)]) is None  # type: ignore[arg-type]
    assert decoder.plan("t", [column("k", FIELD_TYPE.LONG)]) is not None


# ---- events whose bytes do not walk: Undecodable, never garbage rows -------------------------


@given(st.lists(rows, min_size=1, max_size=3), st.integers(1, 40))
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_a_cut_event_is_undecodable(values: list[dict], cut: int) -> None:
    present = [True] * len(CHUNKS)
    data = b"".join(encode_image(CHUNKS, present, row) for row in values)
    data = data[: max(1, len(data) - cut)]
    event = synthetic_event(WriteRowsEvent, "megamind_chunks", CHUNKS, data, bitmap(present))
    with pytest.raises(Undecodable):
        RowDecoder({"megamind_chunks": TEST_KEYS}, ()).decode(event)


STAMPED = [_varchar("chunk_id", 50), _varchar("realm_id", 50)]


@given(
    st.lists(st.text("abc", max_size=5), min_size=1, max_size=4),
    st.sampled_from([(0, 3), (0, 6), (3, 6), (6, 0), (3, 0)]),
)
def test_a_mis_sized_column_makes_the_event_undecodable(
    ids: list[str], fsp: tuple[int, int]
) -> None:
    """The pre-10.1 temporal format sizes TIME/DATETIME/TIMESTAMP otherwise than the table
    map says: rows written one way and read another must not come out as rows."""
    written, read = fsp
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, 120000)
    encode = [*STAMPED, column("updated_at", FIELD_TYPE.DATETIME2, fsp=written)]
    decode = [*STAMPED, column("updated_at", FIELD_TYPE.DATETIME2, fsp=read)]
    present = [True] * 3
    data = b"".join(
        encode_image(encode, present, {"chunk_id": i, "realm_id": "GLOBAL", "updated_at": when})
        for i in ids
    )
    event = synthetic_event(WriteRowsEvent, "megamind_chunks", decode, data, bitmap(present))
    decoder = RowDecoder({"megamind_chunks": {"chunk_id", "realm_id"}}, ())
    try:
        rows = decoder.decode(event)
    except Undecodable:
        return
    # walked to the exact end by coincidence: then every row must still be one we wrote
    assert rows is not None
    assert [row.after for row in rows] == [{"chunk_id": i, "realm_id": "GLOBAL"} for i in ids]


def test_a_key_value_that_does_not_decode_makes_the_event_undecodable() -> None:
    present = [True, True]
    data = encode_image(STAMPED, present, {"chunk_id": "a", "realm_id": "GLOBAL"})
    data = data.replace(b"GLOBAL", b"GL\xffBAL")  # not UTF-8
    event = synthetic_event(WriteRowsEvent, "megamind_chunks", STAMPED, data, bitmap(present))
    with pytest.raises(Undecodable, match="does not decode"):
        RowDecoder({"megamind_chunks": {"realm_id"}}, ()).decode(event)


# ---- against the real MariaDB binlog ------------------------------------------------------


# The test connection's charset is 3-byte utf8: no characters beyond the BMP.
bmp_text = st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)), max_size=12)
maria_rows = st.fixed_dictionaries(
    {
        "realm_id": st.sampled_from(["GLOBAL", "project-1", "é"]),
        "content": bmp_text,
        "source_document": bmp_text,
        "chunk_type": st.none() | st.sampled_from(ENUMS["chunk_type"]),
        "embedding": st.none() | embeddings.map(lambda v: str(v)),
        "element_category": st.none() | st.sampled_from(["security", "naming", "x_y"]) | bmp_text,
        "priority_score": st.none() | st.decimals(Decimal("-9.99"), Decimal("9.99"), places=2),
        "enforcement_level": st.none() | st.sampled_from(ENUMS["enforcement_level"]),
        "tags": st.none() | st.just('{"a": [1, 2.5, "x"]}'),
        "access_count": st.integers(-(2**31), 2**31 - 2),  # room for one bump
        "last_accessed": st.none() | st.just("2026-01-02 03:04:05"),
    }
)


@pytest.mark.parametrize("image", ["FULL", "NOBLOB"])
@given(
    st.lists(
        st.tuples(maria_rows, st.sampled_from(["update", "bump", "delete"])), min_size=1, max_size=4
    )
)
@settings(
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_mariadb_row_events_decode_as_the_library_does(
    image: str, mysql_params: dict[str, Any], db: pymysql.Connection, database: str, ops: list
) -> None:
    with db.cursor() as cur:
        cur.execute(f"SET SESSION binlog_row_image = {image}")
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        start = str(cur.fetchone()[0])
        tag = unique("c")
        for i, (values, action) in enumerate(ops):
            chunk_id = f"{tag}-{i}"  # the schema outlives one example
            names = ", ".join(["chunk_id", *values])
            marks = ", ".join(["%s"] * (len(values) + 1))
            cur.execute(
                f"INSERT INTO megamind_chunks ({names}) VALUES ({marks})",
                (chunk_id, *values.values()),
            )
            if action == "update":
                cur.execute(
                    "UPDATE megamind_chunks SET content = CONCAT(content, 'x'), "
                    "element_category = %s WHERE chunk_id = %s",
                    (values["element_category"], chunk_id),
                )
            elif action == "bump":
                cur.execute(
                    "UPDATE megamind_chunks SET access_count = access_count + 1, "
                    "last_accessed = NOW() WHERE chunk_id = %s",
                    (chunk_id,),
                )
            else:
                cur.execute("DELETE FROM megamind_chunks WHERE chunk_id = %s", (chunk_id,))
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        end = str(cur.fetchone()[0])
    events = _compare_stream(mysql_params, database, start, end)
    assert events >= 2 * len(ops)


def _compare_stream(mysql_params: dict[str, Any], database: str, start: str, end: str) -> int:
    """Read start..end; decode every row event both ways; return how many were compared."""
    stream = BinLogStreamReader(
        connection_settings=mysql_params,
        server_id=random.randint(10_000, 2**31),
        blocking=True,
        is_mariadb=True,
        auto_position=start,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, MariadbGtidEvent, XidEvent],
        only_schemas=[database],
        only_tables=["megamind_chunks"],
    )
    ignored = {"access_count", "last_accessed", "updated_at"}
    decoder = RowDecoder({"megamind_chunks": PRODUCTION_KEYS}, ignored)
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
            raw = event.packet.packet  # the pymysql packet: read the row bytes without moving
            data = raw._data[
                raw._position : raw._position + event.event_size - event.packet.read_bytes
            ]
            names = [c.name for c in event.columns]
            flags = [
                bool(event.columns_present_bitmap[i >> 3] & (1 << (i & 7)))
                for i in range(len(names))
            ]
            flags2 = None
            if isinstance(event, UpdateRowsEvent):
                b2 = event.columns_present_bitmap2
                flags2 = [bool(b2[i >> 3] & (1 << (i & 7))) for i in range(len(names))]
            plan = decoder.plan(event.table, event.columns)
            assert plan is not None, "the reference schema must take the fast path"
            mine = decoder.decode_rows(plan, event, data)
            theirs = _rows_present(event, names, flags, flags2)
            _check(mine, theirs, PRODUCTION_KEYS, ignored)
            compared += 1
    finally:
        stream.close()
    return compared


def _rows_present(
    event: Any, names: list[str], flags: list[bool], flags2: list[bool] | None
) -> list[tuple]:
    """The library's rows, each image reduced to the columns its bitmap includes (its own
    none_sources can misreport presence across the images of one event)."""

    def shown(values: dict[str, Any], there: list[bool]) -> dict[str, Any]:
        return {n: values[n] for n, f in zip(names, there, strict=True) if f}

    out = []
    for row in event.rows:
        if flags2 is not None:
            out.append((shown(row["before_values"], flags), shown(row["after_values"], flags2)))
        elif isinstance(event, DeleteRowsEvent):
            out.append((shown(row["values"], flags), None))
        else:
            out.append((None, shown(row["values"], flags)))
    return out
