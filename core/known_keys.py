"""Cache key names found by earlier scans, grouped by filter, judged one group at a time. Pure.

Most keys a change affects had the same name at an earlier scan (the primer server refills a
deleted key under its old name), so deleting the known names a change affects (one predicate
call per distinct filter, one UNLINK) removes them within a round trip of the change being
read, before any sweep of the keyspace. Two users: the invalidate task (tasks.known_keys, the
names its own sweeps found) and the listener's fast lane (worker.fast_lane, the names of its
own background SCAN). Neither relies on it for completeness: the sweep (SCAN, the ground
truth) still runs for every batch and finds names new since, or never seen.

Each key's filter is parsed once, when its group is first seen, and groups are indexed by
every category their keys may list, folded case-insensitively (core.collation CI: it makes
equal whatever any modelled collation does): judging a change looks only at the keys that may
list one of its categories as the database compares them, at those that list every category,
and at those whose list folds to WILD (judged always).

Generations: a snapshot is never changed once built (a reader in another thread may judge
it while the next one is built); each complete scan makes the next with `rebuilt`. A name is
kept while one of the last `retain` scans found it, or it was deleted ahead of a sweep since
the last (`carried`): a name deleted by one change and refilled later is absent from the
scans in between, yet still affected by the next change. A stale name costs nothing but an
UNLINK of nothing: only the predicate decides what is deleted. A scan that found more than
`limit` names keeps none (that keyspace is left to the sweeps).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from core.collation import CI, WILD, fold_cats
from core.keys import KeyFilter, KeyFormat

Doomed = Callable[[KeyFilter], bool]


class KnownNames:
    def __init__(self, keys: KeyFormat, limit: int, retain: int = 1) -> None:
        self.keys = keys
        self.limit = limit
        self.retain = max(1, retain)
        self.generation = 0
        self._groups: dict[str, dict[bytes, int]] = {}  # filter text -> name -> generation
        self._filters: dict[str, KeyFilter | None] = {}  # filter text -> filter (None: odd)
        # Filter texts by each category a key may list (every `_`-aligned run of its cats,
        # as core.predicate.category_listed reads them); "" keys: every category; odd: none.
        self._by_run: dict[str, set[str]] = {}
        self._every: set[str] = set()
        self._odd: set[str] = set()
        self._size = 0
        # Memos shared along the generations, used by the thread that builds them only.
        self._text_of: dict[bytes, str] = {}
        self._parsed: dict[str, KeyFilter | None] = {}

    def __len__(self) -> int:
        return self._size

    def rebuilt(self, found: list[bytes], carried: Iterable[bytes] = ()) -> KnownNames:
        """The next generation: `found` (every name one complete scan found), `carried`
        (names deleted ahead of a sweep since the last: likely refilled), and the names that
        the last `retain` - 1 generations kept. Empty above `limit` names. `self` is left
        as it was."""
        new = KnownNames(self.keys, self.limit, self.retain)
        new.generation = self.generation + 1
        new._text_of, new._parsed = self._text_of, self._parsed
        if len(self._text_of) > 2 * self.limit:
            new._text_of, new._parsed = {}, {}
        if len(found) > self.limit:
            return new
        oldest = new.generation - self.retain + 1
        for text, members in self._groups.items():
            for raw, generation in members.items():
                if generation >= oldest:
                    new._put(raw, generation, text)
        for raw in carried:
            new._put(raw, new.generation)
        for raw in found:
            new._put(raw, new.generation)
        if new._size > self.limit:
            return KnownNames(self.keys, self.limit, self.retain)
        return new

    def affected(self, doomed: Doomed, categories: Collection[str] | None = None) -> list[bytes]:
        """The known names a sweep with `doomed` would delete (unparseable ones included).
        `categories`: every category `doomed` can hold true for a key listing it (the change's
        images' categories, folded under any collation kind: core.predicate.ChangeIndex
        .categories): only the keys that may list one of them (as CI folds it), or every
        category, are judged. None: judge every key."""
        folded = None if categories is None else {fold_cats(CI, c) for c in categories}
        if folded is None or WILD in folded:
            texts: Iterable[str] = self._groups
        else:
            texts = self._every | self._odd
            for category in folded:
                texts.update(self._by_run.get(category, ()))
        out: list[bytes] = []
        filters, groups = self._filters, self._groups
        for text in texts:
            key_filter = filters[text]
            if key_filter is None or doomed(key_filter):
                out.extend(groups[text])
        return out

    def _put(self, raw: bytes, generation: int, text: str | None = None) -> None:
        if text is None:
            text = self._text_of.get(raw)
            if text is None:
                text = self._text_of[raw] = self.keys.filter_text(_text(raw))
        members = self._groups.get(text)
        if members is None:
            members = self._groups[text] = {}
            self._index(text, raw)
        if raw not in members:
            self._size += 1
            members[raw] = generation
        elif members[raw] < generation:
            members[raw] = generation

    def _index(self, text: str, raw: bytes) -> None:
        if text in self._parsed:
            key_filter = self._parsed[text]
        else:
            parsed = self.keys.parse(_text(raw))
            key_filter = self._parsed[text] = None if parsed is None else parsed.filter
        self._filters[text] = key_filter
        if key_filter is None:
            self._odd.add(text)
        elif not key_filter.cats or fold_cats(CI, key_filter.cats) == WILD:
            self._every.add(text)  # every category, or a list that may name any of them
        else:
            for run in runs(fold_cats(CI, key_filter.cats)):
                self._by_run.setdefault(run, set()).add(text)


def runs(cats: str) -> set[str]:
    """Every `_`-aligned run of a key's joined categories: the categories it may list."""
    parts = cats.split("_")
    return {"_".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
