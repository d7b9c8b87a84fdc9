"""The listener's typed position and the checkpoint's stored form (existing checkpoints in
Redis must load, and a new one must be stored as before)."""

from __future__ import annotations

import json

import pytest

from core.position import (
    Checkpoint,
    FilePosition,
    GtidPosition,
    gtid_of,
    position_from_json,
    position_text,
)


def test_a_checkpoint_is_stored_as_before() -> None:
    # what the listener wrote as json.dumps({**position, "event_time": ..., "saved_at": ...})
    gtid = Checkpoint(GtidPosition("0-1-42,1-5-7"), 1700000000, 1700000001.25)
    assert json.dumps(gtid.to_json()) == (
        '{"gtid": "0-1-42,1-5-7", "event_time": 1700000000, "saved_at": 1700000001.25}'
    )
    file = Checkpoint(FilePosition("binlog.000003", 1234), 5, 6.5)
    assert json.dumps(file.to_json()) == (
        '{"file": "binlog.000003", "pos": 1234, "event_time": 5, "saved_at": 6.5}'
    )


@pytest.mark.parametrize(
    ("stored", "loaded"),
    [
        (
            '{"gtid": "0-1-42", "event_time": 1700000000, "saved_at": 1700000001.25}',
            Checkpoint(GtidPosition("0-1-42"), 1700000000, 1700000001.25),
        ),
        (
            '{"file": "binlog.000003", "pos": 1234, "event_time": 0, "saved_at": 2.0}',
            Checkpoint(FilePosition("binlog.000003", 1234), 0, 2.0),
        ),
        ('{"gtid": ""}', Checkpoint(GtidPosition(""))),  # without times: as 0
        ('{"gtid": "u:1-5", "event_time": null}', Checkpoint(GtidPosition("u:1-5"))),
    ],
)
def test_stored_checkpoints_load(stored: str, loaded: Checkpoint) -> None:
    assert Checkpoint.from_json(json.loads(stored)) == loaded
    assert Checkpoint.from_json(loaded.to_json()) == loaded


def test_a_position_says_where_it_is() -> None:
    assert position_text(GtidPosition("0-1-5")) == "GTID 0-1-5"
    assert position_text(FilePosition("binlog.000001", 4)) == "binlog.000001:4"
    assert position_text(None) == ""
    assert gtid_of(GtidPosition("0-1-5")) == "0-1-5"
    assert gtid_of(FilePosition("binlog.000001", 4)) == gtid_of(None) == ""
    with pytest.raises(ValueError, match="not a binlog position"):
        position_from_json({"event_time": 5})
