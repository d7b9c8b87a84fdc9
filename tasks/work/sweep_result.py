"""What a sweep did: counts, the keys a dry run would delete, the hot keys it holds."""

from __future__ import annotations

from dataclasses import dataclass, field

UNPARSEABLE_SAMPLE = 5  # keys that do not parse, named in the log by the sweep that deletes them


@dataclass
class SweepResult:
    scanned: int = 0
    deleted: int = 0
    unparseable: int = 0
    unparseable_sample: list[str] = field(default_factory=list)  # the first few, for the log
    leases_revoked: int = 0
    keys: list[str] = field(default_factory=list)  # filled on dry runs only
    # (key, OBJECT answer) of the deleted keys a Heat probe found hot
    hot: list[tuple[str, int]] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # hot key -> the lease the sweep took
    repeats: int = 0  # sweeps run again because a fill's marker may have gone (see above)

    def add(self, other: SweepResult) -> None:
        self.scanned += other.scanned
        self.deleted += other.deleted
        self.unparseable += other.unparseable
        room = UNPARSEABLE_SAMPLE - len(self.unparseable_sample)
        self.unparseable_sample.extend(other.unparseable_sample[:room])
        self.leases_revoked += other.leases_revoked
        self.keys.extend(other.keys)
        self.hot.extend(other.hot)
        self.held.update(other.held)
        self.repeats += other.repeats

    def to_json(self) -> dict[str, object]:
        return {
            "scanned": self.scanned,
            "deleted": self.deleted,
            "unparseable": self.unparseable,
            "leases_revoked": self.leases_revoked,
            **({"keys": self.keys} if self.keys else {}),
        }
