"""One term's loop: take the reader's transactions, publish them as batches when due, and
keep the lock, the heartbeat and the completion tracker going meanwhile. (The fast lane's
deletes run on a thread of their own, fed by the reader: worker.fast_lane_feed.)

A turn of the loop: say the loop is alive (the lock's renewer lets a stalled loop's lock go);
wait briefly for the next transaction; add it to the waiting batch; poll the batches not done
(worker.completion_tracker); then publish the waiting batch if it is due (worker.pacing says
when), unless the ledger is full (the workers are behind: the batch goes on growing).
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import replace
from typing import NoReturn

from adapters.redis import heartbeat
from core.position import Position, position_reached
from worker import metrics
from worker.batcher import BatchBuilder, Transaction
from worker.completion_tracker import POLL_EVERY, CompletionTracker
from worker.fast_lane_feed import FastLaneFeed
from worker.faults import TRANSIENT, ReaderError
from worker.pacing import Pacer
from worker.term import Term

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0  # how often the leader writes its lag for `primer-cache status`
# Before a batch goes, the fast lane's deletes of its transactions (worker.fast_lane_feed) are
# waited for this long at most: with refresh on, the fast lane takes the hot keys' leases, and
# the batch's sweep should find them (it takes each over for its refresh). The feed is ahead
# of the loop but for a moment; a Redis that hangs makes the wait the whole of it.
FAST_LANE_WAIT_S = 0.05
# A turn takes every transaction already readable (up to this many): one per turn left more
# readable behind each costly turn (a completion poll every 2 ms while the ledger is full).
DRAIN_MAX = 1000
# The longest an idle leader waits for a transaction: it must still see a stop signal, write
# its heartbeat and renew a long lock in time.
IDLE_WAIT_MAX_S = 0.25

Events = queue.Queue[Transaction | BaseException]


class BatchLoop:
    def __init__(
        self, term: Term, events: Events, backlog_end: Position, feed: FastLaneFeed | None
    ) -> None:
        """`backlog_end`: where the binlog ended when the term opened (the pacer batches more
        freely until the stream has read that far); `feed`: the term's fast lane, which the
        reader feeds too."""
        s = term.parts.settings
        self.parts = term.parts
        self.ledger = term.ledger
        self.events = events
        self.backlog_end = backlog_end
        self.builder = BatchBuilder()
        self.tracker = CompletionTracker(term)
        self.pacer = Pacer(s.listener.batch_max_changes, s.listener.batch_max_wait_ms / 1000.0)
        self.warms_owed = False  # batches published behind skip their warms: one warm_all after
        self.feed = feed
        self.taken = 0  # transactions taken (the feed's count says when it has them all)
        self.beat_at = 0.0

    def run(self) -> None:
        """Until stopped; then the checkpoint goes as far as the batches done allow."""
        builder = self.builder
        while not self.parts.stopping.is_set():
            self._keep_alive()
            item = self._next()
            now = time.monotonic()
            if item is not None:
                self._take(item, now)
                self._take_readable(now)
            if builder.complete:
                self._look_ahead(now)
            self.tracker.poll(now, waiting=builder.has_work and self.ledger.full)
            self._pay_owed_warms(now)
            if builder.complete:
                self._publish_if_due(now)
        self.tracker.save_checkpoint(time.monotonic(), force=True)

    # ---- the steps of a turn ----------------------------------------------------------

    def _keep_alive(self) -> None:
        freshness = metrics.FRESHNESS
        freshness.tick()
        freshness.outstanding = bool(len(self.ledger))
        self.parts.leadership.alive()
        self.parts.leadership.check()
        if time.monotonic() - self.beat_at >= HEARTBEAT_EVERY:
            self._heartbeat()
            self.beat_at = time.monotonic()

    def _next(self) -> Transaction | None:
        """The next transaction read, if one comes within _wait(); raises what stopped the
        reader."""
        try:
            item = self.events.get(timeout=self._wait())
        except queue.Empty:
            if not self.builder.complete:
                metrics.FRESHNESS.idle()  # nothing readable, nothing waiting: caught up
            return None
        if isinstance(item, BaseException):
            _reader_stopped(item)
        return item

    def _take_readable(self, now: float) -> None:
        """Take what is readable already (the batch they join is the same as one per turn
        would build: the pacer holds a batch while more is readable)."""
        events, builder = self.events, self.builder
        max_rows = self.pacer.max_rows
        for _ in range(DRAIN_MAX):
            if builder.rows >= max_rows:
                return  # the batch is due as it is (listener.batch_max_changes)
            try:
                item = events.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, BaseException):
                _reader_stopped(item)
            self._take(item, now)

    def _take(self, item: Transaction, now: float) -> None:
        self.pacer.took(now, item.event_time, first=not self.builder.complete)
        self.builder.add(item)
        self.taken += 1
        metrics.FRESHNESS.took(item.event_time)

    def _look_ahead(self, now: float) -> None:
        """With whole transactions waiting: note the end of the backlog."""
        pacer = self.pacer
        if (
            pacer.catching_up
            and self.events.empty()
            and position_reached(self.builder.position, self.backlog_end)
        ):
            pacer.backlog_read()
            if self.parts.follower is not None:
                self.parts.follower.hand_over()  # the term reads at the head now

    def _pay_owed_warms(self, now: float) -> None:
        if self.warms_owed and self._caught_up(now):
            self.warms_owed = False
            if self.parts.settings.warm.patterns:
                self.parts.publisher.warm_all()

    def _publish_if_due(self, now: float) -> None:
        readable = not self.events.empty()
        wall = time.time()
        if self.pacer.hold(now, wall, self.builder.rows, readable):
            return
        # While the workers are behind, the batch goes on growing (its images are a set).
        if self.builder.has_work and self.ledger.full:
            return
        if self.feed is not None:  # its fast-lane deletes before its batch goes
            self.feed.wait_for(self.taken, FAST_LANE_WAIT_S)
        metrics.TRANSACTIONS.inc(self.builder.transactions)
        self._publish(now, behind=self.pacer.behind(now, wall, readable))

    def _publish(self, now: float, *, behind: bool) -> None:
        batch, position, event_time = self.builder.take()
        assert position is not None
        if batch:
            sent = self.ledger.publish(replace(batch, behind=behind), now)
            self.warms_owed = self.warms_owed or behind
            self.parts.publisher.invalidate(sent)
            metrics.BATCHES.inc()
            metrics.BATCH_TRANSACTIONS.observe(sent.transactions)
            log.debug(
                "published batch %s/%d: %d images of %d transactions up to %s%s",
                sent.term,
                sent.seq,
                len(sent.images),
                sent.transactions,
                sent.upto,
                " (behind)" if behind else "",
            )
        self.ledger.advance(position, event_time)
        if self.events.empty():
            metrics.FRESHNESS.idle()  # everything read so far is published (or held nothing)

    # ---- helpers ----------------------------------------------------------------------

    def _caught_up(self, now: float) -> bool:
        """Whether the stream has caught up and every batch published behind is done."""
        readable = not self.events.empty()
        if self.pacer.behind(now, time.time(), readable):
            return False
        return not any(entry.batch.behind for entry in self.ledger.entries.values())

    def _heartbeat(self) -> None:
        fresh = metrics.FRESHNESS
        parts = self.parts
        beat = heartbeat.Heartbeat(
            leader=parts.leadership.token,
            at=time.time(),
            lag_s=round(fresh.lag(), 3),
            caught_up=fresh.caught_up,
            last_commit=fresh.last_commit,
        )
        stale_ms = int(1000 * heartbeat.stale_after_s(parts.settings.listener.leader_ttl_ms))
        heartbeat.write(parts.redis, parts.settings.cache.state_prefix, beat, stale_ms)

    def _wait(self) -> float:
        """How long to wait for the next transaction: while transactions wait to be published,
        only a few ms (their batch may come due); while batches are not done, until the next
        look at their state; otherwise until the lock needs renewing, or a stop signal or the
        heartbeat is due (a 10-minute lock must not keep a stopped leader waiting 75 s)."""
        if self.builder.complete:
            return 0.002
        if len(self.ledger):
            return POLL_EVERY
        return min(self.parts.leadership.renew_interval / 2, IDLE_WAIT_MAX_S)


def _reader_stopped(item: BaseException) -> NoReturn:
    if isinstance(item, TRANSIENT):
        raise item
    # Not a connection fault: an event the library could not read, say. Never exit on one
    # bad event: log it, and resume from the checkpoint after a pause.
    raise ReaderError(f"binlog reader stopped: {item!r}") from item
