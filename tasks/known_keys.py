"""The cache key names this worker process's last complete sweep found, grouped by filter:
a batch deletes the ones it affects first, in one round trip, and then sweeps as ever.

Why: a sweep of the keyspace (SCAN, the ground truth) costs about 10-15 ms per 10,000 keys,
and a key it deletes goes only when the SCAN reaches it. Most keys a batch affects had the
same name at the previous sweep (the primer server refills a deleted key under its old
name), so the snapshot keeps every name found, deleted or not, and the names deleted ahead
of a sweep: deleting the affected ones first takes one predicate call per distinct filter
and one UNLINK (a name not there is a no-op), so they go within a millisecond or two of the
task's start. The full sweep still follows and finds everything else (names new since,
names this process never saw): completeness does not rest on the snapshot, only speed does.

A Celery prefork child keeps its own snapshot (a few MB per 100,000 keys); keyspaces larger
than `limit` keep none (the sweep alone then, as before).
"""

from __future__ import annotations

from collections.abc import Callable

from core.keys import KeyFilter, KeyFormat

DEFAULT_LIMIT = 200_000


class KnownKeys:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._groups: dict[str, list[bytes]] = {}  # filter text -> keys (as SCAN gave them)
        self._building: dict[str, list[bytes]] | None = None
        self._count = 0

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def start(
        self, keys: KeyFormat, carried: list[bytes] | None = None
    ) -> Callable[[str, bytes], None]:
        """Begin a new snapshot holding `carried` (the names deleted ahead of this sweep);
        the returned callback records a key the sweep finds."""
        building: dict[str, list[bytes]] = {}
        self._building, self._count = building, 0
        filter_text = keys.filter_text

        def saw(text: str, raw: bytes) -> None:
            self._count += 1
            if self._count <= self.limit:
                group = filter_text(text)
                if group in building:
                    building[group].append(raw)
                else:
                    building[group] = [raw]

        for raw in carried or ():
            saw(_text(raw), raw)
        return saw

    def finish(self) -> None:
        """The sweep completed: its snapshot replaces the last one (none if over the limit)."""
        if self._building is not None:
            self._groups = self._building if self._count <= self.limit else {}
            self._building = None

    def abandon(self) -> None:
        """The sweep failed part-way: keep the previous snapshot."""
        self._building = None

    def affected(self, keys: KeyFormat, doomed: Callable[[KeyFilter], bool]) -> list[bytes]:
        """The known keys a sweep with `doomed` would delete (unparseable ones included)."""
        judge = keys.judge(doomed)
        out: list[bytes] = []
        for group in self._groups.values():
            if judge(_text(group[0])) is not False:
                out.extend(group)
        return out


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# One per process (Celery's prefork children each fill their own after the fork). On a
# cluster, nodes are swept in threads: a key lost to a race between two of them only
# leaves the snapshot smaller, never the sweep.
KNOWN = KnownKeys()
