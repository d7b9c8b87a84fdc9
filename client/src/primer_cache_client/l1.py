"""The in-process L1: an LRU of responses with a TTL backstop, exact under invalidation.

The ordering rule: a value read from Redis may enter the L1 only if no invalidation of its key
reached this process between sending the read and storing the reply. Invalidations arrive on
another connection (tracking.py), so the reply and the invalidation race. A reader takes a
ticket before it sends the read (`begin`); every invalidation received meanwhile bumps the
pending key's counter; `finish` stores only when the counter and the tracking epoch are still
those of the ticket. An invalidation received after the store removes the entry as usual.

While tracking is not established (`distrust`), the L1 is empty and neither serves nor
stores: every change of that state bumps the epoch, so a read begun before a drop never
stores after it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple


class Ticket(NamedTuple):
    epoch: int
    invalidations: int


class L1:
    def __init__(
        self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self._pending: dict[str, list[int]] = {}  # key -> [readers, invalidations seen]
        self._trusted = False
        self._epoch = 0
        self.hits = 0
        self.misses = 0
        self.bypassed = 0  # lookups while tracking is down
        self.invalidations = 0  # entries removed by an invalidation
        self.refused_stores = 0  # stores refused by the ordering rule
        self.evictions = 0
        self.flushes = 0

    def reset_lock(self) -> None:
        """In a forked child: the lock may have been held by a thread that is not there."""
        self._lock = threading.Lock()
        self._pending.clear()

    @property
    def trusted(self) -> bool:
        return self._trusted

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._data.get(key)  # empty whenever not trusted
            if entry is not None and entry[1] > self._clock():
                self._data.move_to_end(key)
                self.hits += 1
                return entry[0]
            if entry is not None:
                del self._data[key]  # past its TTL
            if self._trusted:
                self.misses += 1
            else:
                self.bypassed += 1
            return None

    def begin(self, key: str) -> Ticket | None:
        """Call before sending the read whose reply may be stored; None: it may not be."""
        with self._lock:
            if not self._trusted:
                return None
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = [0, 0]
            pending[0] += 1
            return Ticket(self._epoch, pending[1])

    def unchanged(self, key: str, ticket: Ticket | None) -> bool:
        """No invalidation of `key` (nor any tracking change) since `ticket` was taken, whose
        read is still in progress. With no ticket (tracking down) nothing is known: True, so
        that concurrent misses still share one read (as without an L1)."""
        if ticket is None:
            return True
        with self._lock:
            pending = self._pending.get(key)
            return (
                pending is not None
                and self._epoch == ticket.epoch
                and pending[1] == ticket.invalidations
            )

    def finish(self, key: str, ticket: Ticket | None, value: dict[str, Any] | None) -> bool:
        """End the read begun with `ticket`: store `value` (None: nothing to store) when no
        invalidation of `key` and no tracking change came in between. True when stored."""
        if ticket is None:
            return False
        with self._lock:
            pending = self._pending[key]
            stored = False
            if value is not None:
                if (
                    self._trusted
                    and self._epoch == ticket.epoch
                    and pending[1] == ticket.invalidations
                ):
                    self._data[key] = (value, self._clock() + self.ttl_s)
                    self._data.move_to_end(key)
                    while len(self._data) > self.size:
                        self._data.popitem(last=False)
                        self.evictions += 1
                    stored = True
                else:
                    self.refused_stores += 1
            pending[0] -= 1
            if pending[0] == 0:
                del self._pending[key]
            return stored

    def invalidate(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                if self._data.pop(key, None) is not None:
                    self.invalidations += 1
                pending = self._pending.get(key)
                if pending is not None:
                    pending[1] += 1

    def flush(self) -> None:
        """Everything may have changed (FLUSHALL, an unknown invalidation): drop it all and
        refuse the stores of reads in flight."""
        with self._lock:
            self._drop_all()

    def distrust(self) -> None:
        """Tracking is lost: empty, bypass, refuse stores of reads in flight."""
        with self._lock:
            self._trusted = False
            self._drop_all()

    def trust(self) -> None:
        """Tracking is established (every invalidation from now on will arrive)."""
        with self._lock:
            self._drop_all()
            self._trusted = True

    def _drop_all(self) -> None:
        self._epoch += 1
        if self._data:
            self.flushes += 1
        self._data.clear()
