"""The leader's ledger of the batches it published in its current term and that are not done.

Pure bookkeeping (no I/O): the listener feeds it what it published and what the tasks
reported (adapters.redis.completion), and asks it three things:

- where it may checkpoint: the position just before the oldest batch not done (or, when
  every batch is done, the end of what it has read), so a restart replays every batch that
  may not have run;
- which batches are orphaned: the worker that received one (its holder) is dead
  (adapters.redis.liveness); the listener publishes them again at once, once per holder, so a
  worker that is slow but alive is never flooded;
- which batches are overdue: no progress for `redeliver_after` seconds since they were
  (re)published or last reported progress; the listener publishes them again (the backstop,
  for a worker that died before it said it held the batch, or that hangs alive);
- whether it is full: `limit` batches not done and not swept (backpressure; 0 = never full).
  A swept batch waits only on read-replica follow-ups: it holds the checkpoint, not the
  stream (a replica that is down must not stop invalidation on the primary's time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from adapters.redis.completion import BatchState
from core.batch import Batch
from core.position import Position


@dataclass
class Entry:
    batch: Batch  # with its term and seq
    start: Position | None  # the checkpoint just before the batch; None: no checkpoint at all
    start_event_time: int  # the binlog time of that checkpoint
    due: float  # when it is overdue (monotonic seconds)
    progress: int = 0  # the last progress count seen
    deliveries: int = 1
    swept: bool = False  # its first sweep ran; only follow-up passes are left
    holder: str = ""  # the worker that received it last ("": none known)
    orphaned_by: str = ""  # the dead holder it was published again for


class Ledger:
    def __init__(
        self,
        term: str,
        start: Position | None,
        start_event_time: int,
        *,
        limit: int,
        redeliver_after: float,
    ) -> None:
        self.term = term
        self.limit = limit
        self.redeliver_after = redeliver_after
        self.entries: dict[int, Entry] = {}  # by seq, oldest first
        self._next_seq = 1
        # The end of what has been read and handed on: the checkpoint once all is done.
        self.read_to: Position | None = start
        self.read_to_event_time = start_event_time

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def full(self) -> bool:
        if not 0 < self.limit <= len(self.entries):
            return False
        return self.limit <= sum(not entry.swept for entry in self.entries.values())

    def publish(self, batch: Batch, now: float) -> Batch:
        """Record `batch` (covering what was read since the last one) as published; return it
        with its term and seq, as it must go on the wire."""
        numbered = replace(batch, term=self.term, seq=self._next_seq)
        self._next_seq += 1
        self.entries[numbered.seq] = Entry(
            numbered, self.read_to, self.read_to_event_time, now + self.redeliver_after
        )
        return numbered

    def advance(self, position: Position, event_time: int) -> None:
        """Everything up to `position` has been read and published (or held nothing)."""
        self.read_to, self.read_to_event_time = position, event_time

    def update(self, states: Mapping[int, BatchState], now: float) -> list[Entry]:
        """Apply the tasks' reports: drop the batches done, postpone those that progressed.
        Returns the entries that were done."""
        finished = []
        for seq, state in states.items():
            entry = self.entries.get(seq)
            if entry is None:
                continue
            if state.done:
                finished.append(self.entries.pop(seq))
                continue
            entry.swept = entry.swept or state.swept
            entry.holder = state.holder or entry.holder
            if state.progress != entry.progress:
                entry.progress = state.progress
                entry.due = now + self.redeliver_after
        return finished

    def holders(self) -> set[str]:
        """The workers holding batches not done (whose death would orphan them)."""
        return {e.holder for e in self.entries.values() if e.holder and e.holder != e.orphaned_by}

    def orphaned(self, alive: set[str], now: float) -> list[Entry]:
        """The batches to publish again now because their holder is not in `alive` (each once
        per holder: a new holder must receive it before its death counts again); each is then
        due `redeliver_after` later."""
        lost = [
            entry
            for entry in self.entries.values()
            if entry.holder and entry.holder != entry.orphaned_by and entry.holder not in alive
        ]
        for entry in lost:
            entry.orphaned_by = entry.holder
            entry.due = now + self.redeliver_after
            entry.deliveries += 1
        return lost

    def overdue(self, now: float) -> list[Entry]:
        """The batches to publish again now; each is due again `redeliver_after` later."""
        late = [entry for entry in self.entries.values() if entry.due <= now]
        for entry in late:
            entry.due = now + self.redeliver_after
            entry.deliveries += 1
        return late

    def checkpoint(self) -> tuple[Position | None, int]:
        """Where a restart may resume: just before the oldest batch not done. None: nowhere
        yet (the oldest batch not done is the cold-start flush, which has no position before)."""
        for entry in self.entries.values():
            return entry.start, entry.start_event_time
        return self.read_to, self.read_to_event_time
