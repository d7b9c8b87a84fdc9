"""The binlog reader thread against the real MariaDB: what it hands over, and that it ends."""

from __future__ import annotations

import queue
import random
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pymysql

from config import load_settings
from core.position import GtidPosition
from tests.services import child_env, service_env
from worker import metrics
from worker.batcher import Transaction
from worker.server_check import check_server, current_position
from worker.stream import BinlogReader


def reader_for(database: str, db: pymysql.Connection) -> tuple[BinlogReader, queue.Queue[Any]]:
    env = service_env()
    env["PRIMER_MYSQL_URL"] = env["PRIMER_MYSQL_URL"].rsplit("/", 1)[0] + f"/{database}"
    settings = load_settings(child_env(env))
    settings = replace(
        settings, listener=replace(settings.listener, server_id=random.randint(10_000, 2**31))
    )
    server = check_server(db)
    out: queue.Queue[Any] = queue.Queue()
    return BinlogReader(settings, server, current_position(db, server), out), out


def test_reader_hands_over_one_item_per_transaction(database: str, db: pymysql.Connection) -> None:
    reader, out = reader_for(database, db)
    reader.start()
    try:
        with db.cursor() as cur:
            cur.execute(
                "INSERT INTO megamind_chunks (chunk_id, content, element_category, priority_score)"
                " VALUES ('s1', 'x', 'security', 0.9), ('s2', 'y', 'process', 0.1)"
            )
        txn = out.get(timeout=20)
        assert isinstance(txn, Transaction), txn
        assert txn.rows == 2
        assert {image.category for image in txn.images} == {"security", "process"}
        assert isinstance(txn.position, GtidPosition)
        assert txn.position.gtid.startswith("0-1-")
    finally:
        reader.stop()
        reader.join(10)


def test_stopped_reader_ends_and_does_not_reconnect(database: str, db: pymysql.Connection) -> None:
    # A listener that lost the lead stops its reader and carries on: the thread must end,
    # not let the library reconnect and keep a binlog stream open under our server_id.
    reader, out = reader_for(database, db)
    reader.start()
    with db.cursor() as cur:  # make sure the stream is connected
        cur.execute("INSERT INTO megamind_chunks (chunk_id, content) VALUES ('s3', 'x')")
    out.get(timeout=20)
    reader.stop()
    reader.join(10)
    assert not reader.is_alive(), "the stopped reader is still running"


def test_a_table_shape_the_decoder_does_not_cover_falls_back_to_the_library(
    database: str, db: pymysql.Connection
) -> None:
    # A deployment whose priority_score is a DOUBLE: the fast decoder does not read that
    # type as a key column, so the library decodes those events, and the fallback is counted.
    with db.cursor() as cur:
        cur.execute("ALTER TABLE megamind_chunks MODIFY priority_score DOUBLE NULL")
    fallbacks = metrics.DECODER_FALLBACKS._value.get()
    reader, out = reader_for(database, db)
    reader.start()
    try:
        with db.cursor() as cur:
            cur.execute(
                "INSERT INTO megamind_chunks (chunk_id, content, element_category, priority_score)"
                " VALUES ('f1', 'x', 'security', 0.25)"
            )
        txn = out.get(timeout=20)
        assert isinstance(txn, Transaction), txn
        assert {(image.category, image.priority) for image in txn.images} == {
            ("security", Decimal("0.25"))
        }
        assert metrics.DECODER_FALLBACKS._value.get() == fallbacks + 1
    finally:
        reader.stop()
        reader.join(10)


def test_read_bumps_are_dropped_and_real_changes_kept_on_the_fast_path(
    database: str, db: pymysql.Connection
) -> None:
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO megamind_chunks (chunk_id, content, element_category, embedding)"
            " VALUES ('b1', 'x', 'security', '[0.5, 0.25]'), ('b2', 'y', 'naming', NULL)"
        )
    fallbacks = metrics.DECODER_FALLBACKS._value.get()
    reader, out = reader_for(database, db)
    reader.start()
    try:
        with db.cursor() as cur:
            for image in ("FULL", "NOBLOB"):
                cur.execute(f"SET SESSION binlog_row_image = {image}")
                cur.execute(
                    "UPDATE megamind_chunks SET access_count = access_count + 1,"
                    " last_accessed = NOW()"
                )
                cur.execute(
                    "UPDATE megamind_chunks SET content = %s WHERE chunk_id = 'b2'", (image,)
                )
        for _ in range(2):
            bump, change = out.get(timeout=20), out.get(timeout=20)
            assert (bump.rows, bump.images) == (2, set())
            assert {image.category for image in change.images} == {"naming"}
        assert metrics.DECODER_FALLBACKS._value.get() == fallbacks
    finally:
        reader.stop()
        reader.join(10)


def test_a_column_added_while_streaming_is_decoded_with_the_new_table_map(
    database: str, db: pymysql.Connection
) -> None:
    # Table maps are parsed once per table id (freeze_schema): an ALTER of a watched table
    # must not leave rows decoded with the old column layout.
    reader, out = reader_for(database, db)
    reader.start()
    try:
        with db.cursor() as cur:
            cur.execute(
                "INSERT INTO megamind_chunks (chunk_id, content, element_category, priority_score)"
                " VALUES ('a1', 'x', 'security', 0.25)"
            )
            cur.execute(
                "ALTER TABLE megamind_chunks ADD COLUMN extra VARCHAR(20) NULL FIRST,"
                " MODIFY enforcement_level ENUM('optional','required','recommended') NULL"
            )
            cur.execute(
                "INSERT INTO megamind_chunks (extra, chunk_id, content, element_category,"
                " priority_score, enforcement_level) VALUES ('e', 'a2', 'y', 'naming', 0.75,"
                " 'required')"
            )
        before, ddl, after = (out.get(timeout=20) for _ in range(3))
        assert {(i.category, i.priority) for i in before.images} == {("security", Decimal("0.25"))}
        assert ddl.flush_reason.startswith("DDL")
        assert {(i.category, i.priority, i.level) for i in after.images} == {
            ("naming", Decimal("0.75"), "required")
        }
    finally:
        reader.stop()
        reader.join(10)
