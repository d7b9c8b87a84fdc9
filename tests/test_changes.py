"""Row images to changes, and batching at transaction boundaries (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.changes import (
    CHUNKS,
    ELEMENTS,
    OddRowError,
    changed_columns,
    row_change,
    visible_change,
)
from core.position import FilePosition, GtidPosition, position_reached
from core.predicate import ElementImage
from worker.batcher import BatchBuilder, TransactionBuilder

IGNORED = {"access_count", "last_accessed", "updated_at"}


def chunk(**over: Any) -> dict[str, Any]:
    row = {
        "chunk_id": "c1",
        "realm_id": "GLOBAL",
        "content": "use TLS",
        "element_category": "security",
        "priority_score": Decimal("0.90"),
        "enforcement_level": "required",
        "embedding": '{"v": [1, 2]}',
        "access_count": 3,
        "last_accessed": None,
        "updated_at": "2026-01-01 00:00:00",
    }
    row.update(over)
    return row


SEC = ElementImage("security", Decimal("0.90"), "required")


def test_insert_and_delete_carry_one_image() -> None:
    assert row_change(CHUNKS, None, chunk(), IGNORED).images == (SEC,)  # type: ignore[union-attr]
    assert row_change(CHUNKS, chunk(), None, IGNORED).images == (SEC,)  # type: ignore[union-attr]


def test_update_carries_before_and_after() -> None:
    change = row_change(CHUNKS, chunk(), chunk(element_category="process"), IGNORED)
    assert change is not None
    assert set(change.images) == {SEC, ElementImage("process", Decimal("0.90"), "required")}


def test_content_edit_keeps_one_image() -> None:
    change = row_change(CHUNKS, chunk(), chunk(content="use mTLS"), IGNORED)
    assert change is not None and change.images == (SEC,)


@pytest.mark.parametrize("column", sorted(IGNORED))
def test_ignored_column_bumps_change_nothing(column: str) -> None:
    assert row_change(CHUNKS, chunk(), chunk(**{column: "bumped"}), IGNORED) is None


def test_ignored_columns_are_configurable() -> None:
    assert row_change(CHUNKS, chunk(), chunk(access_count=4), set()) is not None


def test_realm_moves() -> None:
    change = row_change(CHUNKS, chunk(realm_id="PROJECT"), chunk(), IGNORED)
    assert change is not None and change.images == (SEC,)
    change = row_change(CHUNKS, chunk(), chunk(realm_id="PROJECT"), IGNORED)
    assert change is not None and change.images == (SEC,)
    assert (
        row_change(CHUNKS, chunk(realm_id="P"), chunk(realm_id="P", content="x"), IGNORED) is None
    )


def test_null_category_is_an_image() -> None:
    change = row_change(CHUNKS, None, chunk(element_category=None), IGNORED)
    assert change is not None
    assert change.images == (ElementImage(None, Decimal("0.90"), "required"),)


def test_metadata_change_refers_to_its_chunks() -> None:
    before = {"element_id": "e1", "chunk_id": "c1", "title": "TLS", "access_count": 1}
    change = row_change(ELEMENTS, before, {**before, "title": "mTLS"}, IGNORED)
    assert change is not None and change.chunk_refs == ("c1",)
    moved = row_change(ELEMENTS, before, {**before, "chunk_id": "c2"}, IGNORED)
    assert moved is not None and set(moved.chunk_refs) == {"c1", "c2"}
    assert row_change(ELEMENTS, before, {**before, "access_count": 2}, IGNORED) is None


def test_noblob_images_missing_a_text_column() -> None:
    # binlog_row_image=NOBLOB: unchanged TEXT/JSON columns are absent from the after image.
    before = chunk()
    after = {k: v for k, v in chunk(priority_score=Decimal("0.5")).items() if k != "content"}
    assert changed_columns(before, after) == {"priority_score", "content"}
    change = row_change(CHUNKS, before, after, IGNORED)
    assert change is not None and len(change.images) == 2


@pytest.mark.parametrize(
    "row, bad",
    [
        ({k: v for k, v in chunk().items() if k != "realm_id"}, "realm_id"),
        (chunk(priority_score="high"), "'high'"),
        (chunk(enforcement_level=2), "2"),
        (chunk(element_category=7), "7"),
    ],
)
def test_odd_rows_are_named(row: dict[str, Any], bad: str) -> None:
    with pytest.raises(OddRowError, match=bad):
        row_change(CHUNKS, None, row, IGNORED)


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 2)),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 2)),
)
def test_changed_columns_model(before: dict[str, int], after: dict[str, int]) -> None:
    expected = {c for c in before.keys() | after.keys() if before.get(c, -1) != after.get(c, -1)}
    assert changed_columns(before, after) == expected


def builders() -> tuple[TransactionBuilder, BatchBuilder]:
    return TransactionBuilder(
        "megamind_chunks", "megamind_global_elements", IGNORED
    ), BatchBuilder()


def test_batches_are_cut_at_transaction_ends() -> None:
    txn, batch_builder = builders()
    txn.row("megamind_chunks", None, chunk())
    assert not batch_builder.complete
    batch_builder.add(txn.end(GtidPosition("0-1-5"), 100))
    txn.row("megamind_chunks", None, chunk(element_category="process"))  # still open
    batch, position, event_time = batch_builder.take()
    assert position == GtidPosition("0-1-5") and event_time == 100
    assert batch.images == frozenset({SEC}) and batch.transactions == 1
    batch_builder.add(txn.end(GtidPosition("0-1-6"), 101))
    batch, position, _ = batch_builder.take()
    assert position == GtidPosition("0-1-6")
    assert batch.images == frozenset({ElementImage("process", Decimal("0.90"), "required")})


def test_transactions_coalesce_into_one_batch() -> None:
    txn, batch_builder = builders()
    for n, category in enumerate(["security", "process", "security"]):
        txn.row("megamind_chunks", chunk(access_count=1), chunk(access_count=2))  # no-op
        txn.row("megamind_chunks", None, chunk(element_category=category))
        batch_builder.add(txn.end(GtidPosition(f"0-1-{n}"), n))
    assert batch_builder.rows == 6 and batch_builder.has_work
    batch, position, _ = batch_builder.take()
    assert batch.transactions == 3 and position == GtidPosition("0-1-2")
    assert {image.category for image in batch.images} == {"security", "process"}
    assert not batch_builder.complete


def test_no_op_transactions_have_no_work() -> None:
    txn, batch_builder = builders()
    txn.row("megamind_chunks", chunk(access_count=1), chunk(access_count=2))
    batch_builder.add(txn.end(GtidPosition("0-1-9"), 1))
    assert batch_builder.complete and not batch_builder.has_work
    assert not batch_builder.take()[0]


def test_odd_row_flushes_its_batch() -> None:
    txn, batch_builder = builders()
    txn.row("megamind_chunks", None, chunk(priority_score="high"))
    batch_builder.add(txn.end(GtidPosition("0-1-7"), 1))
    batch, _, _ = batch_builder.take()
    assert batch.flush and "priority_score" in batch.reason


def test_ddl_flushes_its_batch() -> None:
    txn, batch_builder = builders()
    txn.ddl("megamind", "TRUNCATE TABLE megamind_chunks")
    batch_builder.add(txn.end(GtidPosition("0-1-8"), 1))
    batch, _, _ = batch_builder.take()
    assert batch.flush and "TRUNCATE" in batch.reason


def test_position_reached() -> None:
    assert not position_reached(None, GtidPosition("0-1-5"))
    assert position_reached(GtidPosition("0-1-5"), GtidPosition("0-1-5"))
    assert not position_reached(GtidPosition("0-1-4"), GtidPosition("0-1-5"))
    assert position_reached(GtidPosition("0-1-9,1-2-3"), GtidPosition("0-1-5,1-2-3"))
    assert not position_reached(GtidPosition("0-1-9"), GtidPosition("0-1-5,1-2-3"))
    assert position_reached(GtidPosition("0-1-9"), GtidPosition(""))
    assert position_reached(FilePosition("binlog.000002", 4), FilePosition("binlog.000001", 99))
    assert not position_reached(FilePosition("binlog.000001", 4), FilePosition("binlog.000001", 99))


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "access_count"]), st.integers(0, 2)),
    st.dictionaries(st.sampled_from(["a", "b", "c", "access_count"]), st.integers(0, 2)),
)
def test_visible_change_is_changed_columns_minus_ignored(
    before: dict[str, int], after: dict[str, int]
) -> None:
    expected = bool(changed_columns(before, after) - {"access_count"})
    assert visible_change(before, after, frozenset({"access_count"})) == expected
