"""The cache key names this worker process's recent sweeps found, grouped by filter: a batch
deletes the ones it affects first, in one round trip, and then sweeps as ever.

Why: a sweep of the keyspace (SCAN, the ground truth) costs about 10-15 ms per 10,000 keys,
and a key it deletes goes only when the SCAN reaches it. Most keys a batch affects had the
same name at an earlier sweep (the primer server refills a deleted key under its old name),
so the snapshot keeps every name found, deleted or not, and the names deleted ahead of a
sweep: deleting the affected ones first takes one predicate call per distinct filter and
one UNLINK (a name not there is a no-op), so they go within a millisecond or two of the
task's start. The full sweep still follows and finds everything else (names new since,
names this process never saw): completeness does not rest on the snapshot, only speed does.

Grouping costs about a quarter of a sweep, so the snapshot is rebuilt from a sweep at most
every `rebuild_every` seconds; in between it only gains the names deleted ahead of sweeps.
A Celery prefork child keeps its own snapshot (a few MB per 100,000 keys); keyspaces larger
than `limit` keep none (the sweep alone then, as before).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from core.keys import KeyFilter, KeyFormat
from core.known_keys import KnownNames

DEFAULT_LIMIT = 200_000
REBUILD_EVERY = 1.0
RETAIN = 3  # a name stays known while one of the last 3 rebuilds saw it (core.known_keys)


class KnownKeys:
    def __init__(self, limit: int = DEFAULT_LIMIT, rebuild_every: float = REBUILD_EVERY) -> None:
        self.limit = limit
        self.rebuild_every = rebuild_every
        self._names: KnownNames | None = None
        self._collected: list[bytes] | None = None
        self._carried: list[bytes] = []
        self._pending: set[bytes] = set()  # deleted ahead since the last rebuild
        self._built_at = float("-inf")

    def __len__(self) -> int:
        return 0 if self._names is None else len(self._names)

    def start(self, keys: KeyFormat, carried: list[bytes] | None = None) -> list[bytes] | None:
        """A sweep begins after deleting `carried` ahead of it. Returns the list the sweep
        should append every cache key it finds to, or None when no rebuild is due."""
        if not self._same_format(keys):
            # A snapshot holds one key format's names (a process that serves another format,
            # as tests do, starts afresh): another format's names would judge as unparseable
            # and be deleted as doomed.
            self._names, self._pending, self._built_at = None, set(), float("-inf")
        if self._names is None:
            self._names = KnownNames(keys, self.limit, RETAIN)
        self._carried = list(carried or ())
        due = time.monotonic() - self._built_at >= self.rebuild_every
        self._collected = [] if due else None
        return self._collected

    def finish(self) -> None:
        """The sweep completed: rebuild from what it found (if collected), keep the carried."""
        names, collected, carried = self._names, self._collected, self._carried
        self._collected, self._carried = None, []
        if names is None:
            return
        self._pending.update(carried)
        if collected is None:
            return
        self._names = names.rebuilt(collected, self._pending)
        self._pending = set()
        self._built_at = time.monotonic()

    def abandon(self) -> None:
        """The sweep failed part-way: keep the previous snapshot."""
        self._collected, self._carried = None, []

    def affected(
        self,
        keys: KeyFormat,
        doomed: Callable[[KeyFilter], bool],
        categories: Collection[str] | None = None,
    ) -> list[bytes]:
        """The known names a sweep with `doomed` would delete (not those that do not parse);
        `categories` as core.known_keys.KnownNames.affected takes them."""
        if self._names is None or not self._same_format(keys):
            return []
        return self._names.affected(doomed, categories)

    def _same_format(self, keys: KeyFormat) -> bool:
        known = None if self._names is None else self._names.keys
        return known is None or (known.prefix, known.template) == (keys.prefix, keys.template)


# One per keyspace (Redis URL, key prefix and template) per process: Celery's prefork
# children each fill their own after the fork; a name is only ever judged by the format it
# was found under, and deleted from the Redis it was found in. On a cluster, nodes are swept
# in threads appending to one list (list.append is atomic).
_KNOWN: dict[tuple[str, str, str], KnownKeys] = {}
_MAX_KEYSPACES = 4


def known_for(redis_url: str, keys: KeyFormat) -> KnownKeys:
    space = (redis_url, keys.prefix, keys.template)
    known = _KNOWN.get(space)
    if known is None:
        if len(_KNOWN) >= _MAX_KEYSPACES:
            _KNOWN.clear()
        known = _KNOWN[space] = KnownKeys()
    return known
