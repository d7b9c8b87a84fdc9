"""Cache key names found by earlier scans, grouped by filter, judged one group at a time. Pure.

Most keys a change affects had the same name at an earlier scan (the primer server refills a
deleted key under its old name), so deleting the known names a change affects (one predicate
call per distinct filter, one UNLINK) removes them within a round trip of the change being
read, before any sweep of the keyspace. Two users: the invalidate task (tasks.known_keys, the
names its own sweeps found) and the listener's fast lane (worker.fast_lane, the names of its
own background SCAN). Neither relies on it for completeness: the sweep (SCAN, the ground
truth) still runs for every batch and finds names new since, or never seen.

Generations: each complete scan is one (`begin` before it, `rebuild` after). A name is kept
while it was seen by one of the last `retain` scans or added (deleted ahead of a sweep) since
the oldest of them began: a name deleted by one change and refilled later is absent from the
scans in between, yet still affected by the next change. A stale name costs nothing but an
UNLINK of nothing: only the predicate decides what is deleted. A scan that found more than
`limit` names keeps none (that keyspace is left to the sweeps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from core.keys import KeyFilter, KeyFormat


class KnownNames:
    def __init__(self, keys: KeyFormat, limit: int, retain: int = 1) -> None:
        self.keys = keys
        self.limit = limit
        self.retain = max(1, retain)
        self._groups: dict[str, dict[bytes, int]] = {}  # filter text -> name -> generation
        self._group_of: dict[bytes, str] = {}  # memo: a name's filter text
        self._generation = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def begin(self) -> None:
        """A complete scan starts: names seen or added from now on belong to a new generation."""
        self._generation += 1

    def add(self, names: Iterable[bytes]) -> None:
        """Names known to exist now (or deleted ahead of a sweep: likely refilled later)."""
        group_of = self._group_of
        if len(group_of) > 2 * self.limit:
            group_of.clear()
        filter_text = self.keys.filter_text
        generation = self._generation
        groups = self._groups
        for raw in names:
            text = group_of.get(raw)
            if text is None:
                text = group_of[raw] = filter_text(_text(raw))
            members = groups.get(text)
            if members is None:
                members = groups[text] = {}
            if raw not in members:
                self._size += 1
            members[raw] = generation
        if self._size > self.limit:
            self.clear()

    def rebuild(self, names: list[bytes]) -> None:
        """The scan begun last found `names` (all of them): add them, and drop the names no
        scan of the last `retain` generations saw. Above `limit` names, keep none."""
        if len(names) > self.limit:
            self.clear()
            return
        self.add(names)
        oldest = self._generation - self.retain + 1
        kept: dict[str, dict[bytes, int]] = {}
        size = 0
        for text, members in self._groups.items():
            live = {raw: gen for raw, gen in members.items() if gen >= oldest}
            if live:
                kept[text] = live
                size += len(live)
        self._groups, self._size = kept, size

    def clear(self) -> None:
        self._groups, self._size = {}, 0

    def affected(self, doomed: Callable[[KeyFilter], bool]) -> list[bytes]:
        """The known names a sweep with `doomed` would delete (unparseable ones included)."""
        judge = self.keys.judge(doomed)
        out: list[bytes] = []
        for members in self._groups.values():
            if judge(_text(next(iter(members)))) is not False:
                out.extend(members)
        return out


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
