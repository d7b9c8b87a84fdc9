"""The fast lane's deletes, fed with transactions as a binlog reader reads them, on a thread
of their own: the term's (worker.term_runner: the term's reader feeds it too) and the fast
lane's own stream's (worker.fast_lane_stream).

A thread of its own, not the term's loop: the loop publishes batches (a Celery publish costs
a millisecond or more of Python) and polls the batches' completion (round trips, every 2 ms
while the ledger is full), and a transaction read meanwhile waited for them before its delete
(the tail of commit -> gone at 500 commits/s, issue 21). Here a round takes every transaction
already readable (up to DRAIN_MAX), groups their images by collations, and deletes the known
keys they affect in one round trip per group.

A delete that fails (the cache Redis paused or failing over) is owed and retried every
RETRY_OWED_S until made, or until its changes are FAST_LANE_MAX_AGE_S old (the sweeps alone
then): the changes committed during an outage go the moment the Redis is back, not when the
sweeps of the batches behind them get to them. Changes read over FAST_LANE_MAX_AGE_S after
their commit are passed over (a long catch-up: the sweeps alone).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import redis

from core.collation import Collations
from core.position import Position
from core.predicate import ElementImage
from worker.batcher import Transaction
from worker.fast_lane import FAST_LANE_MAX_AGE_S, FastLane

log = logging.getLogger(__name__)

RETRY_OWED_S = 0.1  # a failed delete is tried again this often (an outage's end, noticed)
DRAIN_MAX = 1000  # transactions taken per round at most (a backlog: a few rounds)
WAIT_S = 0.1  # the longest wait for a transaction (a stop is seen this soon)

Images = dict[Collations, set[ElementImage]]
Feed = queue.Queue[Transaction | BaseException]


class FastLaneFeed:
    """Rounds of deletes over one queue of transactions; call round() from one thread."""

    def __init__(self, fast_lane: FastLane, name: str, client: redis.Redis | None = None) -> None:
        """`client`: the deleting thread's own Redis client (default: the fast lane's)."""
        self.fast_lane = fast_lane
        self.name = name
        self.client = client
        self.taken = 0  # transactions taken so far, deleted or owed (or passed over)
        self.position: Position | None = None  # after the last transaction taken
        # after the last transaction whose deletes are all made (none owed before it): where
        # another lane takes over without passing over an owed delete
        self.done_upto: Position | None = None
        self.owed: Images = {}
        self._owed_commit = 0.0  # commit time (epoch s) of the newest owed change
        self._owed_tried = 0.0
        self.done = threading.Condition()  # notified after each round

    def round(self, events: Feed) -> None:
        """Take what is readable (waiting up to WAIT_S for the first) and delete what it
        affects; raises an exception the reader queued (after the round before it)."""
        try:
            first = events.get(timeout=WAIT_S)
        except queue.Empty:
            self._retry_owed()
            if not self.owed:
                self.done_upto = self.position
            return
        taken = [first]
        while len(taken) < DRAIN_MAX:
            try:
                taken.append(events.get_nowait())
            except queue.Empty:
                break
        fresh: Images = {}
        newest = 0.0
        failure: BaseException | None = None
        count = 0
        for item in taken:
            if isinstance(item, BaseException):
                failure = item
                break
            count += 1
            self.position = item.position
            recent = time.time() - item.event_time < FAST_LANE_MAX_AGE_S
            if item.images and not item.flush_reason and recent:
                fresh.setdefault(item.collations, set()).update(item.images)
                newest = max(newest, float(item.event_time))
        self._delete(fresh, newest)
        if not self.owed:
            self.done_upto = self.position
        with self.done:
            self.taken += count
            self.done.notify_all()
        if failure is not None:
            raise failure

    def wait_for(self, taken: int, timeout: float) -> bool:
        """Wait until `taken` transactions went through a round (True), or `timeout` s."""
        with self.done:
            return self.done.wait_for(lambda: self.taken >= taken, timeout)

    # ---- deletes, and the owed ones -------------------------------------------------------

    def _delete(self, fresh: Images, newest: float) -> None:
        # While deletes are owed, new ones join them (tried with them, every RETRY_OWED_S):
        # an outage costs one attempt per RETRY_OWED_S, not one per round.
        self._retry_owed()
        for collations, images in fresh.items():
            if self.owed or not self._delete_now(images, collations):
                self.owed.setdefault(collations, set()).update(images)
                self._owed_commit = max(self._owed_commit, newest)

    def _retry_owed(self) -> None:
        if not self.owed:
            return
        now = time.monotonic()
        if now - self._owed_tried < RETRY_OWED_S:
            return
        self._owed_tried = now
        if time.time() - self._owed_commit >= FAST_LANE_MAX_AGE_S:
            log.warning(
                "%s: fast lane: %d owed deletes dropped, their changes over %g s old (the "
                "sweeps delete their keys)",
                self.name,
                sum(len(images) for images in self.owed.values()),
                FAST_LANE_MAX_AGE_S,
            )
            self.owed.clear()
            return
        for collations in list(self.owed):
            if not self._delete_now(self.owed[collations], collations):
                return  # still away: try again in RETRY_OWED_S
            del self.owed[collations]

    def _delete_now(self, images: set[ElementImage], collations: Collations) -> bool:
        return self.fast_lane.delete(images, collations, client=self.client) is not None


class FeedThread(threading.Thread):
    """A term's fast lane: rounds over the term's reader's second queue until stopped."""

    def __init__(self, feed: FastLaneFeed, events: Feed) -> None:
        super().__init__(name="fast-lane-feed", daemon=True)
        self.feed = feed
        self.events = events
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(10)

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.feed.round(self.events)
            except Exception as exc:  # never let the thread die: the sweeps go on
                log.exception("%s: fast lane: a round failed (%s)", self.feed.name, exc)
                self._stopping.wait(WAIT_S)
