"""One leadership term, start to end: where it starts (the checkpoint, if the source holds it;
else a cold start: a flush of every primer key), the binlog reader from there, the batch loop
(worker.batch_loop), and what a broken stream means for the next term.

At least once, end to end, whatever the broker does: each term has a ledger of the batches it
published (worker.ledger); the checkpoint is the position just before the oldest batch the
tasks have not reported done (worker.completion_tracker). A crash, a reconnect or a new
leader replays from the checkpoint with a fresh term (tasks are idempotent).
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass

import pymysql

from config import MySQLSettings
from core.batch import Batch
from core.flush_reason import FlushReason
from core.gtid import GtidFormatError, lacking
from core.position import Checkpoint, GtidPosition, Position, gtid_of, position_text
from worker import metrics
from worker.batch_loop import BatchLoop, Events
from worker.fast_lane_feed import FastLaneFeed, FeedThread
from worker.faults import TRANSIENT, ReaderError, binlog_gone
from worker.ledger import Ledger
from worker.server_check import ServerInfo, check_server, current_position, gtid_position
from worker.stream import QUEUE_SIZE, BinlogReader
from worker.term import ListenerParts, Term

log = logging.getLogger(__name__)

HEALTHY_AFTER = 60.0  # a stream that ran this long resets the reconnect backoff


@dataclass(frozen=True)
class _Opening:
    """What the source said as the term opened."""

    server: ServerInfo
    source: MySQLSettings
    checkpoint: Checkpoint | None  # None: none stored (or lost): the term starts cold
    cold_start: Position | None  # where a cold start starts: the binlog's end
    backlog_end: Position  # where the binlog ended as the term opened


class TermRunner:
    def __init__(self, parts: ListenerParts) -> None:
        self.parts = parts
        self.terms = 0  # streams opened: each is a term of its own, with a fresh ledger
        # Where the last term's fast lane got to: the fast lane's own stream follows from there
        # once the term ends (None: no term yet, or it ended before streaming).
        self.fast_laned_upto: Position | None = None
        # Why the next cold start flushes (a lost checkpoint, or one that cannot be resumed).
        self.cold_start_kind = FlushReason.COLD_START
        self.took_lead_at = 0.0  # when the lock was taken (monotonic s), for the start log

    def run(self) -> None:
        """Stream one term; returns when stopped, or when the next term must start another way
        (cold, or at once after a stream that ran well); raises the faults to back off on."""
        opening = self._open()
        if opening is None:
            return  # the source lacks the checkpoint: the next term starts cold (a flush)
        self.parts.publisher.connect()
        if self.parts.fast_lane is not None:
            self.parts.fast_lane.start()
        term, start = self._begin(opening)
        self._stream(term, opening, start)

    # ---- where the term starts ------------------------------------------------------------

    def _open(self) -> _Opening | None:
        conn = self.parts.sources.connect()
        try:
            server = check_server(conn)
            source = self.parts.sources.current
            checkpoint = self.parts.leadership.load_checkpoint()
            if checkpoint is not None and not self._source_holds(conn, server, checkpoint.position):
                return None
            cold_start = current_position(conn, server) if checkpoint is None else None
            return _Opening(server, source, checkpoint, cold_start, current_position(conn, server))
        finally:
            conn.close()

    def _begin(self, opening: _Opening) -> tuple[Term, Position]:
        """The term's ledger, resumed from the checkpoint or started cold; and its start."""
        parts = self.parts
        self.terms += 1
        term_id = f"{parts.leadership.token}.{self.terms}"
        checkpoint = opening.checkpoint
        if checkpoint is not None:
            ledger = self._ledger(term_id, checkpoint.position, checkpoint.event_time)
            metrics.FRESHNESS.took(float(checkpoint.event_time))
            if parts.settings.warm.patterns:
                parts.publisher.warm_all()
            start = checkpoint.position
        else:
            # The flush re-warms every pattern once it has swept.
            assert opening.cold_start is not None
            start = opening.cold_start
            ledger = self._cold_start(term_id, start, "no checkpoint (first start or lost)")
        log.info(
            "%s: streaming from %s (term %s, %.0f ms after taking the lock)",
            parts.name,
            position_text(start),
            term_id,
            (time.monotonic() - self.took_lead_at) * 1000,
            extra={"position": position_text(start), "term": term_id},
        )
        return Term(term_id, ledger, parts), start

    def _source_holds(self, conn: pymysql.Connection, server: ServerInfo, at: Position) -> bool:
        """Whether the source holds every transaction up to the checkpoint at `at`. After a
        failover the new primary may lack some (never replicated to it: lost) or have another
        history (errant transactions): the cache may then hold answers no longer true, so the
        safe side is a flush and a cold start at the source's own position."""
        if not server.gtid_mode or not isinstance(at, GtidPosition) or not at.gtid:
            return True
        here = gtid_position(conn, server)
        try:
            missing = lacking(at.gtid, here, is_mariadb=server.is_mariadb)
        except GtidFormatError as exc:
            missing = [f"the positions do not compare: {exc}"]
        if not missing:
            return True
        source = self.parts.sources.current
        where = f"{source.host}:{source.port}"
        log.error(
            "%s: MySQL source %s (at %s) LACKS PART OF CHECKPOINT %s: %s; flushing the cache "
            "and starting from its current position",
            self.parts.name,
            where,
            here or "-",
            at.gtid,
            "; ".join(missing),
            extra={"position": position_text(at), "source": where},
        )
        self.parts.leadership.clear_checkpoint()
        self.cold_start_kind = FlushReason.SOURCE_LACKS_POSITION
        return False

    def _ledger(self, term_id: str, start: Position | None, event_time: int) -> Ledger:
        s = self.parts.settings
        return Ledger(
            term_id,
            start,
            event_time,
            limit=s.listener.max_in_flight,
            redeliver_after=s.listener.redeliver_after_s,
        )

    def _cold_start(self, term_id: str, position: Position, why: str) -> Ledger:
        """Flush every primer key, as batch 1 of the term. No checkpoint is written until
        that flush is done: a restart before then finds none and flushes again."""
        log.warning(
            "%s: COLD START (%s): flushing every primer key and starting at %s",
            self.parts.name,
            why,
            position_text(position),
            extra={"position": position_text(position), "term": term_id},
        )
        ledger = self._ledger(term_id, None, 0)
        # The flush carries the position's GTID so that it, too, waits for the read replicas
        # (and is followed up on the late ones): a replica still behind the start position
        # would otherwise refill the cache with answers older than the flush.
        flush = Batch(
            flush=True,
            reason=f"cold start: {why}",
            upto=position_text(position),
            gtid=gtid_of(position),
        )
        self.parts.publisher.invalidate(ledger.publish(flush, time.monotonic()))
        metrics.FALLBACK_FLUSHES.labels(self.cold_start_kind).inc()
        self.cold_start_kind = FlushReason.COLD_START
        ledger.advance(position, 0)
        return ledger

    # ---- the stream -----------------------------------------------------------------------

    def _stream(self, term: Term, opening: _Opening, start: Position) -> None:
        events: Events = queue.Queue(maxsize=QUEUE_SIZE)
        fast = self._fast_lane_thread()
        feed = fast.feed if fast is not None else None
        reader = BinlogReader(
            self.parts.settings,
            opening.server,
            start,
            events,
            opening.source,
            fast_out=fast.events if fast is not None else None,
        )
        reader.start()
        started = time.monotonic()
        try:
            BatchLoop(term, events, opening.backlog_end, feed).run()
        except (*TRANSIENT, ReaderError) as exc:
            if not self._ends_term_quietly(exc, start, time.monotonic() - started):
                raise
        finally:
            reader.stop()
            if fast is not None:
                fast.stop()
            # where the fast lane's own stream takes over: no delete owed is passed over
            self.fast_laned_upto = feed.done_upto if feed and feed.done_upto else start

    def _fast_lane_thread(self) -> FeedThread | None:
        """The term's fast lane: a thread of its own that the reader feeds (a second queue,
        unbounded: the reader must never wait for it)."""
        fast_lane = self.parts.fast_lane
        if fast_lane is None:
            return None
        thread = FeedThread(FastLaneFeed(fast_lane, self.parts.name), queue.Queue())
        thread.start()
        return thread

    def _ends_term_quietly(self, exc: BaseException, start: Position, ran_s: float) -> bool:
        """Whether a broken stream starts the next term at once, without a backoff: the
        checkpoint cannot be resumed (the next term starts cold), or the stream ran well."""
        name = self.parts.name
        if binlog_gone(exc):
            log.error(
                "%s: CHECKPOINT %s CANNOT BE RESUMED (%s): flushing the cache and "
                "starting from the current position",
                name,
                position_text(start),
                exc.args[-1],
            )
            self.parts.leadership.clear_checkpoint()
            self.cold_start_kind = FlushReason.CHECKPOINT_UNRESUMABLE
            return True
        if ran_s > HEALTHY_AFTER:
            # A stream that ran well: reconnect at once, with the backoff reset.
            log.warning("%s: stream broke (%s); reconnecting now", name, exc)
            return True
        return False
