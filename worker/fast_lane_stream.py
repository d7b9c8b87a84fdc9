"""A binlog stream for the fast lane alone: read whenever this listener's term does not read at
the binlog's head, so that a change's known keys go as soon as it is committed, whoever leads
and whatever state the lead is in.

A leader's term runs the fast lane on what it reads (worker.batch_loop). But a term may be
absent or behind: a standby before it takes over, a new leader replaying from the checkpoint,
a leader whose term a cache Redis outage ended (a term needs that Redis for its lock and the
batches' completion). This stream covers those gaps: a standby follows the binlog here all
along (the design issue 21 offers: a standby that deletes beside the leader; deletes are
idempotent, two lanes deleting one key cost a round trip), and a new leader follows on until
its term has read its backlog (BatchLoop calls hand_over()). A term that ends hands back
(follow() from where the term's fast lane got to).

A delete that fails (the cache Redis paused or failing over) is owed and retried every
RETRY_OWED_S until done, or until its changes are FAST_LANE_MAX_AGE_S old (the sweeps alone
then): the keys of the changes committed during an outage go the moment the Redis is back,
not when the sweeps of the batches behind it get to them.

It never publishes and never writes a checkpoint: nothing rests on it but speed. Its binlog
connection has a server_id of its own (the listener's with the top bit flipped: a leader
catching up streams twice for a moment, and one server_id may hold one stream only).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace

import pymysql

from adapters.mysql.sources import SourcePicker
from adapters.redis.connection import connect_redis
from config import Settings
from core.backoff import doubling
from core.collation import Collations
from core.position import Position, position_text
from core.predicate import ElementImage
from worker.batcher import Transaction
from worker.fast_lane import FAST_LANE_MAX_AGE_S, FastLane
from worker.faults import TRANSIENT, ReaderError
from worker.server_check import check_server, current_position
from worker.stream import BinlogReader

log = logging.getLogger(__name__)

RETRY_OWED_S = 0.1  # a failed delete is tried again this often (an outage's end, noticed)
DRAIN_MAX = 1000  # transactions taken per delete round at most (a backlog: a few rounds)
WAIT_S = 0.1  # the longest wait for a transaction (hand_over and stop are seen this soon)
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.1, 0.5
FROM_THE_END_AFTER = 2  # failed opens in a row from one position: follow from the end instead
LOG_EVERY_S = 10.0
QUEUE_SIZE = 50_000

Owed = dict[Collations, set[ElementImage]]


def own_server_id(listener_server_id: int) -> int:
    """The server_id of this stream's binlog connection: the listener's with the top bit of 32
    flipped (never the listener's own; distinct for distinct listeners)."""
    flipped = listener_server_id ^ (1 << 31)
    return flipped or (1 << 31) + 1


class FastLaneStream:
    def __init__(self, settings: Settings, fast_lane: FastLane, name: str) -> None:
        listener = replace(settings.listener, server_id=own_server_id(settings.listener.server_id))
        self.settings = replace(settings, listener=listener)
        self.fast_lane = fast_lane
        self.name = name
        self.sources = SourcePicker(settings.sources)
        # Its own delete connection (a client is not shared across threads here), quick to
        # give up: a delete that fails is owed, not waited for.
        self.client = connect_redis(settings.cache.url, socket_timeout=2, socket_connect_timeout=1)
        self._following = threading.Event()
        self._stopping = threading.Event()
        self._start: Position | None = None  # where the next stream opens (None: the end)
        self._thread: threading.Thread | None = None
        self.owed: Owed = {}
        self._owed_commit = 0.0  # commit time (epoch s) of the newest owed change
        self._owed_tried = 0.0
        self._logged_at = float("-inf")
        self.deleted = 0  # keys this stream deleted (tests, logs)

    # ---- what the listener says ---------------------------------------------------------

    def follow(self, start: Position | None) -> None:
        """Read the binlog from `start` (None: from its end now), unless reading already."""
        if self._following.is_set():
            return
        self._start = start
        self._following.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fast-lane-stream", daemon=True)
            self._thread.start()

    def hand_over(self) -> None:
        """This listener's term reads at the head now: stop reading (after the round read)."""
        if self._following.is_set():
            self._following.clear()
            log.info("%s: fast lane: the term reads at the head; stream stopped", self.name)

    @property
    def following(self) -> bool:
        return self._following.is_set()

    @property
    def position(self) -> Position | None:
        """Where the stream has read to (None: it has not opened yet)."""
        return self._start

    def stop(self) -> None:
        self._stopping.set()
        self._following.clear()
        if self._thread is not None:
            self._thread.join(5)

    # ---- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if not self._following.wait(WAIT_S):
                continue
            try:
                self._follow_once()
                failures = 0
            except (*TRANSIENT, ReaderError, pymysql.Error) as exc:
                failures += 1
                if failures >= FROM_THE_END_AFTER:
                    self._start = None  # a position the source refuses (a failover): the end
                self._log(f"fast lane: its binlog stream failed ({exc}); reopening")
                self._stopping.wait(doubling(failures, RECONNECT_FIRST_S, RECONNECT_MAX_S))
            except Exception as exc:  # never let the thread die: the terms' sweeps go on
                failures += 1
                log.exception("%s: fast lane: its binlog stream stopped (%s)", self.name, exc)
                self._start = None
                self._stopping.wait(RECONNECT_MAX_S)

    def _follow_once(self) -> None:
        """One stream, from self._start, until hand_over(), stop() or a fault."""
        conn = self.sources.connect()
        try:
            server = check_server(conn)
            start = self._start if self._start is not None else current_position(conn, server)
        finally:
            conn.close()
        self._start = start
        events: queue.Queue[Transaction | BaseException] = queue.Queue(maxsize=QUEUE_SIZE)
        reader = BinlogReader(self.settings, server, start, events, self.sources.current)
        reader.start()
        log.info(
            "%s: fast lane: following the binlog from %s beside the term",
            self.name,
            position_text(start),
        )
        try:
            while self._following.is_set() and not self._stopping.is_set():
                self._round(events)
        finally:
            reader.stop()

    def _round(self, events: queue.Queue[Transaction | BaseException]) -> None:
        """Take what is readable (waiting WAIT_S for the first), delete what it affects."""
        try:
            first = events.get(timeout=WAIT_S)
        except queue.Empty:
            self._retry_owed()
            return
        taken = [first]
        while len(taken) < DRAIN_MAX:
            try:
                taken.append(events.get_nowait())
            except queue.Empty:
                break
        fresh: Owed = {}
        newest = 0.0
        for item in taken:
            if isinstance(item, BaseException):
                self._delete(fresh, newest)  # what was read before the fault
                raise item
            self._start = item.position  # a stream reopened after a fault resumes here
            fresh_enough = time.time() - item.event_time < FAST_LANE_MAX_AGE_S
            if item.images and not item.flush_reason and fresh_enough:
                fresh.setdefault(item.collations, set()).update(item.images)
                newest = max(newest, float(item.event_time))
        self._delete(fresh, newest)

    # ---- deletes, and the owed ones -------------------------------------------------------

    def _delete(self, fresh: Owed, newest: float) -> None:
        if self.owed:
            self._retry_owed(force=True)
        for collations, images in fresh.items():
            if self.owed or not self._delete_now(images, collations):
                self.owed.setdefault(collations, set()).update(images)
                self._owed_commit = max(self._owed_commit, newest)

    def _retry_owed(self, *, force: bool = False) -> None:
        if not self.owed:
            return
        now = time.monotonic()
        if not force and now - self._owed_tried < RETRY_OWED_S:
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
        done = self.fast_lane.delete(images, collations, client=self.client)
        if done is None:
            return False
        self.deleted += done
        return True

    def _log(self, line: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("%s: %s", self.name, line)
