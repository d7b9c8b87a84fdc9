"""A binlog stream for the fast lane alone: read whenever this listener's term does not read at
the binlog's head, so that a change's known keys go as soon as it is committed, whoever leads
and whatever state the lead is in.

A leader's term runs the fast lane on what its reader reads (worker.fast_lane_feed). But a
term may be absent or behind: a standby before it takes over, a new leader replaying from the
checkpoint, a leader whose term a cache Redis outage ended (a term needs that Redis for its
lock and the batches' completion). This stream covers those gaps: a standby follows the
binlog here all along (the design issue 21 offers: a standby that deletes beside the leader;
deletes are idempotent, two lanes deleting one key cost a round trip), and a new leader
follows on until its term has read its backlog (BatchLoop calls hand_over()). A term that
ends hands back (follow() from where the term's fast lane got to).

Its deletes go through a worker.fast_lane_feed.FastLaneFeed, as a term's do: a delete that
fails (the cache Redis away) is owed and retried until the Redis is back.

It never publishes and never writes a checkpoint: nothing rests on it but speed. Its binlog
connection has a server_id of its own (the listener's with the top bit flipped: a leader
catching up streams twice for a moment, and one server_id may hold one stream only).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import replace

import pymysql

from adapters.mysql.sources import SourcePicker
from adapters.redis.connection import connect_redis
from config import Settings
from core.backoff import Reconnects
from core.position import Position, position_text
from worker.fast_lane import FastLane
from worker.fast_lane_feed import FastLaneFeed, Feed
from worker.faults import TRANSIENT, ReaderError
from worker.server_check import check_server, current_position
from worker.stream import QUEUE_SIZE, BinlogReader

log = logging.getLogger(__name__)

RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.1, 0.5
# Failed streams in a row (none delivered a transaction) after which the next one opens at the
# binlog's end instead of where the last one got to (a position the source refuses: a failover)
FROM_THE_END_AFTER = 2
LOG_EVERY_S = 10.0


def own_server_id(listener_server_id: int) -> int:
    """The server_id of this stream's binlog connection: the listener's with the top bit of 32
    flipped (never the listener's own; distinct for distinct listeners)."""
    flipped = listener_server_id ^ (1 << 31)
    return flipped or (1 << 31) + 1


class FastLaneStream:
    def __init__(self, settings: Settings, fast_lane: FastLane, name: str) -> None:
        listener = replace(settings.listener, server_id=own_server_id(settings.listener.server_id))
        self.settings = replace(settings, listener=listener)
        self.name = name
        self.sources = SourcePicker(settings.sources)
        # Its own delete connection (a client is not shared across threads here), quick to
        # give up: a delete that fails is owed, not waited for.
        client = connect_redis(settings.cache.url, socket_timeout=2, socket_connect_timeout=1)
        self._following = threading.Event()
        self._stopping = threading.Event()
        self._start: Position | None = None  # where the next stream opens (None: the end)
        self._thread: threading.Thread | None = None
        self.feed = FastLaneFeed(fast_lane, name, client)
        self._logged_at = float("-inf")
        # a stream that delivered a transaction starts the count afresh (succeeded())
        self._reconnects = Reconnects(
            RECONNECT_FIRST_S, RECONNECT_MAX_S, math.inf, FROM_THE_END_AFTER
        )

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
        """This listener's term reads at the head now: stop reading (once the round read and
        the deletes it owes are done)."""
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
        reconnects = self._reconnects
        while not self._stopping.is_set():
            if not self._following.wait(0.1):
                continue
            try:
                self._follow_once()
                reconnects.succeeded()
            except (*TRANSIENT, ReaderError, pymysql.Error) as exc:
                delay = reconnects.failed(0.0)
                if reconnects.step_aside:
                    self._start = None  # a position the source refuses (a failover): the end
                self._log(f"fast lane: its binlog stream failed ({exc}); reopening")
                self._stopping.wait(delay)
            except Exception as exc:  # never let the thread die: the terms' sweeps go on
                reconnects.failed(0.0)
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
        events: Feed = queue.Queue(maxsize=QUEUE_SIZE)
        reader = BinlogReader(self.settings, server, start, events, self.sources.current)
        reader.start()
        log.info(
            "%s: fast lane: following the binlog from %s (its own stream)",
            self.name,
            position_text(start),
        )
        try:
            # After hand_over() on, until the deletes it owes are made (or too old to matter)
            while (self._following.is_set() or self.feed.owed) and not self._stopping.is_set():
                self._round(events)
        finally:
            reader.stop()

    def _round(self, events: Feed) -> None:
        taken = self.feed.taken
        try:
            self.feed.round(events)
        finally:
            if self.feed.taken != taken:
                self._start = self.feed.position  # a stream reopened after a fault resumes here
                self._reconnects.succeeded()

    def _log(self, line: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("%s: %s", self.name, line)
