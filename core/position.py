"""Where the listener stands in the binlog, and the checkpoint the leader stores in Redis.

A position is a GTID position (MariaDB: one GTID per replication domain, `0-1-42,1-5-7`;
MySQL in GTID mode: a GTID set, `uuid:1-42`) or, on a MySQL server without GTIDs, a binlog
file and offset. The checkpoint is a position with the binlog time of its last transaction
and when it was saved, stored as one JSON object whose form existing checkpoints have:
`{"gtid": ..., "event_time": ..., "saved_at": ...}` or `{"file": ..., "pos": ..., ...}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.gtid import mariadb_gtids


@dataclass(frozen=True)
class GtidPosition:
    gtid: str  # "" on a server that has written no GTID yet

    def __str__(self) -> str:
        return f"GTID {self.gtid}"

    def to_json(self) -> dict[str, Any]:
        return {"gtid": self.gtid}


@dataclass(frozen=True)
class FilePosition:
    file: str
    pos: int

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "pos": self.pos}


Position = GtidPosition | FilePosition


def position_from_json(data: Mapping[str, Any]) -> Position:
    """A position as to_json() (or a stored checkpoint) writes it; ValueError when neither form."""
    if "gtid" in data:
        return GtidPosition(str(data["gtid"]))
    if "file" in data:
        return FilePosition(str(data["file"]), int(data["pos"]))
    raise ValueError(f"not a binlog position: {dict(data)!r}")


def position_text(position: Position | None) -> str:
    """For logs and a batch's `upto`: 'GTID 0-1-42', 'binlog.000003:1234', '' for none."""
    return "" if position is None else str(position)


def gtid_of(position: Position | None) -> str:
    """The GTID position a batch carries (read replicas wait for it); '' without one."""
    return position.gtid if isinstance(position, GtidPosition) else ""


def position_reached(position: Position | None, target: Position) -> bool:
    """Whether the stream at `position` has read everything up to `target`. MySQL GTID sets
    are not compared: taken as reached; so are positions of different forms."""
    if position is None:
        return False
    if isinstance(target, GtidPosition) and isinstance(position, GtidPosition):
        if ":" in target.gtid:
            return True  # a MySQL GTID set
        have = mariadb_gtids(position.gtid)
        return all(
            domain in have and _seq(have[domain]) >= _seq(gtid)
            for domain, gtid in mariadb_gtids(target.gtid).items()
        )
    if isinstance(target, FilePosition) and isinstance(position, FilePosition):
        return (position.file, position.pos) >= (target.file, target.pos)
    return True


def _seq(gtid: str) -> int:
    return int(gtid.rsplit("-", 1)[1])


@dataclass(frozen=True)
class Checkpoint:
    """Where a restart resumes: everything before `position` is invalidated."""

    position: Position
    event_time: int = 0  # binlog time (epoch s) of the last transaction before it
    saved_at: float = 0.0  # when the leader saved it (epoch s)

    def to_json(self) -> dict[str, Any]:
        return {**self.position.to_json(), "event_time": self.event_time, "saved_at": self.saved_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            position_from_json(data),
            int(data.get("event_time") or 0),
            float(data.get("saved_at") or 0.0),
        )
