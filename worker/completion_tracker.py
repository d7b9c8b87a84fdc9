"""The leader's side of the completion protocol for one term: reads what the tasks reported
(adapters.redis.completion), publishes overdue or orphaned batches again, and moves the
checkpoint behind the oldest batch not done (worker.ledger decides which)."""

from __future__ import annotations

import logging
import time

from adapters.redis import liveness, stats
from adapters.redis.completion import Completion
from core.position import Checkpoint, Position
from worker import metrics
from worker.ledger import Entry
from worker.term import Term

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 0.2  # at most this often while the checkpoint moves
POLL_EVERY = 0.05  # how often the leader reads the state of the batches not done
POLL_WAITING = 0.002  # and how often while a batch waits for a full ledger to have room
LIVENESS_EVERY = 0.2  # how often the leader asks whether its batches' workers are alive


class CompletionTracker:
    def __init__(self, term: Term) -> None:
        self.parts = term.parts
        self.ledger = term.ledger
        self.completion = Completion(term.parts.redis, term.parts.settings.cache.state_prefix)
        self.polled_at = 0.0
        self.checked_at = 0.0  # when the holders' heartbeats were last looked at
        self.saved_at = 0.0
        self.saved: Position | None = None

    def poll(self, now: float, *, waiting: bool = False) -> None:
        """`waiting`: a batch waits for room in the full ledger, so look at the batches'
        state every few ms: each ms the ledger stays full after a batch is done is latency."""
        ledger = self.ledger
        finished = []
        every = POLL_WAITING if waiting else POLL_EVERY
        if len(ledger) and now - self.polled_at >= every:
            self.polled_at = now
            finished = ledger.update(self.completion.states(ledger.term, list(ledger.entries)), now)
            if now - self.checked_at >= LIVENESS_EVERY:
                self.checked_at = now
                self._orphans(now)
            for entry in ledger.overdue(now):
                self._redeliver(entry)
        # Work done moves the checkpoint at once; transactions that held nothing to publish
        # (read noise) move it at most every CHECKPOINT_EVERY.
        self.save_checkpoint(now, force=bool(finished))

    def _orphans(self, now: float) -> None:
        """Publish again at once the batches whose worker is dead (adapters.redis.liveness)."""
        holders = self.ledger.holders()
        if not holders:
            return
        alive = liveness.alive(self.parts.redis, self.parts.settings.cache.state_prefix, holders)
        for entry in self.ledger.orphaned(alive, now):
            self._redeliver(entry, f"its worker {entry.holder} is dead")

    def _redeliver(self, entry: Entry, why: str = "") -> None:
        batch = entry.batch
        why = why or f"not done {self.ledger.redeliver_after:.0f} s after its last progress"
        log.warning(
            "%s: batch %s/%d up to %s %s: publishing it again (delivery %d)",
            self.parts.name,
            batch.term,
            batch.seq,
            batch.upto or "-",
            why,
            entry.deliveries,
            extra={"term": batch.term, "seq": batch.seq, "upto": batch.upto, "gtid": batch.gtid},
        )
        self.parts.publisher.invalidate(batch)
        metrics.REDELIVERIES.inc()
        stats.add(self.parts.redis, self.parts.settings.cache.state_prefix, redeliveries=1)

    def save_checkpoint(self, now: float, *, force: bool = False) -> None:
        position, event_time = self.ledger.checkpoint()
        if position is None or position == self.saved:
            return  # nothing may be saved yet (cold-start flush not done), or nothing new
        if not force and now - self.saved_at < CHECKPOINT_EVERY:
            return
        self.parts.leadership.save_checkpoint(Checkpoint(position, event_time, time.time()))
        self.saved, self.saved_at = position, now
        metrics.FRESHNESS.checkpointed(event_time)
