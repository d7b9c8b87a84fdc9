"""The listener loop: lead, stream the binlog, publish batches, checkpoint behind completion.

At least once, end to end, whatever the broker does: each stream is a term with a ledger of
the batches it published (worker.ledger); the checkpoint is the position just before the
oldest batch the tasks have not reported done (adapters.redis.completion), and a batch with no
progress for `listener.redeliver_after_s` is published again. A crash, a reconnect or a new
leader replays from the checkpoint with a fresh term (tasks are idempotent).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import replace
from typing import Any

import pymysql
import redis
from kombu.exceptions import OperationalError as BrokerError
from tenacity import Retrying, retry_if_exception_type, wait_exponential, wait_random

from adapters import unreachable
from adapters.mysql.replicas import check_replicas
from adapters.mysql.sources import SourcePicker
from adapters.redis import heartbeat, liveness, stats
from adapters.redis.completion import Completion
from adapters.redis.connection import connect_redis
from config import Settings
from core.batch import Batch
from core.gtid import GtidFormatError, lacking
from core.predicate import ElementImage
from worker import metrics
from worker.batcher import BatchBuilder, Transaction, position_reached, position_text
from worker.fast_lane import FastLane
from worker.leader import Leadership, LeadershipLost
from worker.ledger import Entry, Ledger
from worker.pacing import Pacer
from worker.publisher import Publisher
from worker.server_check import ServerInfo, check_server, current_position, gtid_position
from worker.stream import BinlogReader

log = logging.getLogger(__name__)

TRANSIENT = (
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    BrokerError,
    OSError,  # ConnectionError and socket errors included
)
BINLOG_GONE = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG: purged, or a GTID the server lacks
HEALTHY_AFTER = 60.0  # a stream that ran this long resets the reconnect backoff
CHECKPOINT_EVERY = 0.2  # at most this often while the checkpoint moves
POLL_EVERY = 0.05  # how often the leader reads the state of the batches not done
POLL_WAITING = 0.002  # and how often while a batch waits for a full ledger to have room
HEARTBEAT_EVERY = 1.0  # how often the leader writes its lag for `primer-cache status`
STANDBY_POLL_S = 0.05  # how often a standby tries the leader lock (a takeover waits this long)
LIVENESS_EVERY = 0.2  # how often the leader asks whether its batches' workers are alive
FAST_LANE_MAX_IMAGES = 1000  # the fast lane runs at least once per this many images read


class ReaderError(Exception):
    """Raised when the binlog reader stopped on something other than a connection fault."""


class Listener:
    def __init__(self, settings: Settings, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.name = f"listener[server_id={settings.listener.server_id}]"
        self.redis = connect_redis(settings.cache.url, socket_timeout=10, socket_connect_timeout=5)
        # The lock is renewed by a thread of its own, on a connection of its own whose
        # timeout is below the lock's TTL (a hung renewal must not outlive the lock).
        renew_timeout = max(0.2, settings.listener.leader_ttl_ms / 2000.0)
        self.leadership = Leadership(
            self.redis,
            settings.cache.state_prefix,
            settings.listener.leader_ttl_ms,
            renew_client=connect_redis(
                settings.cache.url,
                socket_timeout=renew_timeout,
                socket_connect_timeout=renew_timeout,
            ),
        )
        self.publisher = publisher or Publisher()
        # The binlog's source: the primary among PRIMER_MYSQL_URL's sources (adapters.mysql.sources)
        self.sources = SourcePicker(settings.sources)
        self.stopping = threading.Event()
        self._terms = 0  # streams opened: each is a term of its own, with a fresh ledger
        # Why the next cold start flushes (a lost checkpoint, or one that cannot be resumed).
        self._cold_start_kind = metrics.FLUSH_COLD_START
        # Deletes the known keys a change affects as soon as it is read (worker.fast_lane).
        self.fast_lane = FastLane(settings) if settings.listener.fast_lane_max_keys > 0 else None
        self._warmed_up = False
        self._took_lead_at = 0.0

    # ---- process lifetime -------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def warm_stop(signum: int, _frame: Any) -> None:
            if self.stopping.is_set():
                raise SystemExit(1)  # second signal: cold stop
            log.info("%s: stopping after the current batch (signal %d)", self.name, signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, warm_stop)
        signal.signal(signal.SIGINT, warm_stop)

    def run(self) -> None:
        """Run until stopped; server settings that are wrong raise ServerSettingsError."""
        self.check_settings()
        try:
            while not self.stopping.is_set():
                for attempt in Retrying(
                    retry=retry_if_exception_type((*TRANSIENT, ReaderError)),
                    wait=wait_exponential(multiplier=0.5, max=30) + wait_random(0, 0.5),
                    before_sleep=self._log_retry,
                    reraise=True,
                ):
                    with attempt:
                        self._lead_once()
        finally:
            if self.fast_lane is not None:
                self.fast_lane.stop()
            self.leadership.release()

    def check_settings(self) -> ServerInfo:
        """The primary's binlog settings (ServerSettingsError) and the read replicas the
        workers will wait for (ReplicaError)."""
        conn = self._connect()
        try:
            server = check_server(conn)
            mysql = self.sources.current
            check_replicas(conn, self.settings.replicas, f"{mysql.host}:{mysql.port}")
            return server
        finally:
            conn.close()

    def _log_retry(self, state: Any) -> None:
        metrics.RESTARTS.inc()
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0
        log.warning(
            "%s: %s; reconnecting in %.2f seconds",
            self.name,
            # the server named (password hidden), as the CLI names it
            (unreachable.describe(exc, self.settings) if exc is not None else None) or exc,
            delay,
            exc_info=exc if isinstance(exc, ReaderError) else None,
        )

    def _connect(self) -> pymysql.Connection:
        return self.sources.connect()

    # ---- one leadership term ----------------------------------------------------------

    def _lead_once(self) -> None:
        self._warm_up()
        if not self._wait_for_leadership():
            return
        self._took_lead_at = time.monotonic()
        self.leadership.start_renewing()
        metrics.FRESHNESS.lead(True)
        try:
            self._stream()
        except LeadershipLost as exc:
            log.warning("%s: %s; standing by", self.name, exc)
        finally:
            self.leadership.stop_renewing()
            metrics.FRESHNESS.lead(False)
            if self.fast_lane is not None:
                self.fast_lane.pause()  # a standby never scans

    def _warm_up(self) -> None:
        """Before waiting for the lock: what a first stream would pay for at takeover (Celery's
        lazy imports, queue declarations and the broker connection: over a second), and one
        SCAN for the fast lane's snapshot, so that a standby streams the moment the lock is
        free and its fast lane knows the key names at once (the scans proper run only while
        it leads: worker.fast_lane). Once per process."""
        if self._warmed_up:
            return
        self.publisher.connect()
        if self.fast_lane is not None:
            try:
                self.fast_lane.scan()
            except redis.RedisError as exc:  # only speed is lost: the leader's scans follow
                log.warning("%s: fast lane: the first scan failed (%s)", self.name, exc)
        self._warmed_up = True

    def _wait_for_leadership(self) -> bool:
        announced = False
        while not self.stopping.is_set():
            metrics.FRESHNESS.tick()
            if self.leadership.try_acquire():
                return True
            if not announced:
                log.info("%s: leader is %s; waiting", self.name, self.leadership.holder())
                announced = True
            self.stopping.wait(STANDBY_POLL_S)
        return False

    def _stream(self) -> None:
        conn = self._connect()
        try:
            server = check_server(conn)
            source = self.sources.current
            checkpoint = self.leadership.load_checkpoint()
            if checkpoint is not None and not self._source_holds(conn, server, checkpoint):
                return  # the next term starts cold: a flush
            cold_start = current_position(conn, server) if checkpoint is None else None
            backlog_end = current_position(conn, server)
        finally:
            conn.close()
        self.publisher.connect()
        if self.fast_lane is not None:
            self.fast_lane.start()  # a leader's only: a standby never scans
        self._terms += 1
        term = f"{self.leadership.token}.{self._terms}"
        if cold_start is None:
            assert checkpoint is not None
            ledger = self._ledger(term, checkpoint, int(checkpoint.get("event_time") or 0))
            metrics.FRESHNESS.took(float(checkpoint.get("event_time") or 0))
            if self.settings.warm.patterns:
                self.publisher.warm_all()
        else:
            # The flush re-warms every pattern once it has swept.
            checkpoint = {**cold_start, "event_time": 0}
            ledger = self._cold_start(term, cold_start, "no checkpoint (first start or lost)")
        log.info(
            "%s: streaming from %s (term %s, %.0f ms after taking the lock)",
            self.name,
            position_text(checkpoint),
            term,
            (time.monotonic() - self._took_lead_at) * 1000,
            extra={"position": position_text(checkpoint), "term": term},
        )
        events: queue.Queue[Transaction | BaseException] = queue.Queue(maxsize=50_000)
        reader = BinlogReader(self.settings, server, checkpoint, events, source)
        reader.start()
        started = time.monotonic()
        try:
            self._consume(events, backlog_end, ledger)
        except (*TRANSIENT, ReaderError) as exc:
            if isinstance(exc, pymysql.err.OperationalError) and exc.args[:1] == (BINLOG_GONE,):
                log.error(
                    "%s: CHECKPOINT %s CANNOT BE RESUMED (%s): flushing the cache and "
                    "starting from the current position",
                    self.name,
                    position_text(checkpoint),
                    exc.args[-1],
                )
                self.leadership.clear_checkpoint()
                self._cold_start_kind = metrics.FLUSH_UNRESUMABLE
                return
            if time.monotonic() - started > HEALTHY_AFTER:
                # A stream that ran well: reconnect at once, with the backoff reset.
                log.warning("%s: stream broke (%s); reconnecting now", self.name, exc)
                return
            raise
        finally:
            reader.stop()

    def _source_holds(
        self, conn: pymysql.Connection, server: ServerInfo, checkpoint: dict[str, Any]
    ) -> bool:
        """Whether the source holds every transaction up to the checkpoint. After a failover
        the new primary may lack some (never replicated to it: lost) or have another history
        (errant transactions): the cache may then hold answers no longer true, so the safe
        side is a flush and a cold start at the source's own position."""
        if not server.gtid_mode or not checkpoint.get("gtid"):
            return True
        here = gtid_position(conn, server)
        try:
            missing = lacking(str(checkpoint["gtid"]), here, is_mariadb=server.is_mariadb)
        except GtidFormatError as exc:
            missing = [f"the positions do not compare: {exc}"]
        if not missing:
            return True
        where = f"{self.sources.current.host}:{self.sources.current.port}"
        log.error(
            "%s: MySQL source %s (at %s) LACKS PART OF CHECKPOINT %s: %s; flushing the cache "
            "and starting from its current position",
            self.name,
            where,
            here or "-",
            checkpoint["gtid"],
            "; ".join(missing),
            extra={"position": position_text(checkpoint), "source": where},
        )
        self.leadership.clear_checkpoint()
        self._cold_start_kind = metrics.FLUSH_SOURCE_LACKS
        return False

    def _ledger(self, term: str, start: dict[str, Any] | None, event_time: int) -> Ledger:
        s = self.settings
        return Ledger(
            term,
            start,
            event_time,
            limit=s.listener.max_in_flight,
            redeliver_after=s.listener.redeliver_after_s,
        )

    def _cold_start(self, term: str, position: dict[str, Any], why: str) -> Ledger:
        """Flush every primer key, as batch 1 of the term. No checkpoint is written until
        that flush is done: a restart before then finds none and flushes again."""
        log.warning(
            "%s: COLD START (%s): flushing every primer key and starting at %s",
            self.name,
            why,
            position_text(position),
            extra={"position": position_text(position), "term": term},
        )
        ledger = self._ledger(term, None, 0)
        # The flush carries the position's GTID so that it, too, waits for the read replicas
        # (and is followed up on the late ones): a replica still behind the start position
        # would otherwise refill the cache with answers older than the flush.
        flush = Batch(
            flush=True,
            reason=f"cold start: {why}",
            upto=position_text(position),
            gtid=str(position.get("gtid", "")),
        )
        self.publisher.invalidate(ledger.publish(flush, time.monotonic()))
        metrics.FALLBACK_FLUSHES.labels(self._cold_start_kind).inc()
        self._cold_start_kind = metrics.FLUSH_COLD_START
        ledger.advance(position, 0)
        return ledger

    def _consume(
        self,
        events: queue.Queue[Transaction | BaseException],
        backlog_end: dict[str, Any],
        ledger: Ledger,
    ) -> None:
        s = self.settings
        builder = BatchBuilder()
        tracker = _Tracker(self, ledger)
        pacer = Pacer(s.listener.batch_max_changes, s.listener.batch_max_wait_ms / 1000.0)
        warms_owed = False  # batches published behind skip their warms: one warm_all after
        fast = self.fast_lane
        fast_images: set[ElementImage] = set()  # read, not yet through the fast lane
        freshness = metrics.FRESHNESS
        beat_at = 0.0
        while not self.stopping.is_set():
            freshness.tick()
            freshness.outstanding = bool(len(ledger))
            self.leadership.alive()
            self.leadership.check()
            if time.monotonic() - beat_at >= HEARTBEAT_EVERY:
                self._heartbeat()
                beat_at = time.monotonic()
            try:
                item = events.get(timeout=self._wait(builder, ledger))
            except queue.Empty:
                item = None
                if not builder.complete:
                    freshness.idle()  # nothing readable, nothing waiting: caught up
            if isinstance(item, BaseException):
                if isinstance(item, TRANSIENT):
                    raise item
                # Not a connection fault: an event the library could not read, say. Never
                # exit on one bad event: log it, and resume from the checkpoint after a pause.
                raise ReaderError(f"binlog reader stopped: {item!r}") from item
            now = time.monotonic()
            if item is not None:
                pacer.took(now, item.event_time, first=not builder.complete)
                builder.add(item)
                freshness.took(item.event_time)
                if fast is not None and item.images and not item.flush_reason:
                    fast_images |= item.images
            if builder.complete:
                readable = not events.empty()
                if (
                    pacer.catching_up
                    and not readable
                    and position_reached(builder.position, backlog_end)
                ):
                    pacer.backlog_read()
                # The known keys go first: the completion poll below costs round trips.
                if fast_images and (not readable or len(fast_images) >= FAST_LANE_MAX_IMAGES):
                    self._fast_lane(fast_images, pacer, builder, now)
            tracker.poll(now, waiting=builder.has_work and ledger.full)
            if warms_owed and self._caught_up(pacer, ledger, now, events):
                warms_owed = False
                if s.warm.patterns:
                    self.publisher.warm_all()
            if not builder.complete:
                continue
            readable = not events.empty()
            wall = time.time()
            if pacer.hold(now, wall, builder.rows, readable):
                continue
            # While the workers are behind, the batch goes on growing (its images are a set).
            if builder.has_work and ledger.full:
                continue
            if fast_images:  # before its batch goes
                self._fast_lane(fast_images, pacer, builder, now)
            metrics.TRANSACTIONS.inc(builder.transactions)
            behind = pacer.behind(now, wall, readable)
            batch, position, event_time = builder.take()
            assert position is not None
            if batch:
                sent = ledger.publish(replace(batch, behind=behind), now)
                warms_owed = warms_owed or behind
                self.publisher.invalidate(sent)
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
            ledger.advance(position, event_time)
            if events.empty():
                freshness.idle()  # everything read so far is published (or held nothing)
        tracker.save_checkpoint(time.monotonic(), force=True)

    def _fast_lane(
        self, images: set[ElementImage], pacer: Pacer, builder: BatchBuilder, now: float
    ) -> None:
        """Delete the known keys `images` affect now, unless the stream is behind (then the
        sweeps alone: latency is spent, throughput needs the CPU); empties `images`."""
        assert self.fast_lane is not None
        if not builder.flush_reason and not pacer.behind(now, time.time(), readable=False):
            self.fast_lane.delete(images, builder.collations)
        images.clear()

    @staticmethod
    def _caught_up(pacer: Pacer, ledger: Ledger, now: float, events: queue.Queue[Any]) -> bool:
        """Whether the stream has caught up and every batch published behind is done."""
        readable = not events.empty()
        if pacer.behind(now, time.time(), readable):
            return False
        return not any(entry.batch.behind for entry in ledger.entries.values())

    def _heartbeat(self) -> None:
        fresh = metrics.FRESHNESS
        beat = heartbeat.Heartbeat(
            leader=self.leadership.token,
            at=time.time(),
            lag_s=round(fresh.lag(), 3),
            caught_up=fresh.caught_up,
            last_commit=fresh.last_commit,
        )
        heartbeat.write(
            self.redis,
            self.settings.cache.state_prefix,
            beat,
            int(1000 * heartbeat.stale_after_s(self.settings.listener.leader_ttl_ms)),
        )

    def _wait(self, builder: BatchBuilder, ledger: Ledger) -> float:
        """How long to wait for the next transaction: while transactions wait to be published,
        only a few ms (their batch may come due); while batches are not done, until the next
        look at their state; otherwise until the lock needs renewing."""
        if builder.complete:
            return 0.002
        if len(ledger):
            return POLL_EVERY
        return self.leadership.renew_interval / 2


class _Tracker:
    """The leader's side of the completion protocol for one term: reads what the tasks
    reported, publishes overdue batches again, and moves the checkpoint."""

    def __init__(self, listener: Listener, ledger: Ledger) -> None:
        self.listener = listener
        self.ledger = ledger
        self.completion = Completion(listener.redis, listener.settings.cache.state_prefix)
        self.polled_at = 0.0
        self.checked_at = 0.0  # when the holders' heartbeats were last looked at
        self.saved_at = 0.0
        self.saved: dict[str, Any] | None = None

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
        s = self.listener.settings
        alive = liveness.alive(self.listener.redis, s.cache.state_prefix, holders)
        for entry in self.ledger.orphaned(alive, now):
            self._redeliver(entry, f"its worker {entry.holder} is dead")

    def _redeliver(self, entry: Entry, why: str = "") -> None:
        batch = entry.batch
        why = why or f"not done {self.ledger.redeliver_after:.0f} s after its last progress"
        log.warning(
            "%s: batch %s/%d up to %s %s: publishing it again (delivery %d)",
            self.listener.name,
            batch.term,
            batch.seq,
            batch.upto or "-",
            why,
            entry.deliveries,
            extra={"term": batch.term, "seq": batch.seq, "upto": batch.upto, "gtid": batch.gtid},
        )
        self.listener.publisher.invalidate(batch)
        metrics.REDELIVERIES.inc()
        stats.add(self.listener.redis, self.listener.settings.cache.state_prefix, redeliveries=1)

    def save_checkpoint(self, now: float, *, force: bool = False) -> None:
        position, event_time = self.ledger.checkpoint()
        if position is None or position == self.saved:
            return  # nothing may be saved yet (cold-start flush not done), or nothing new
        if not force and now - self.saved_at < CHECKPOINT_EVERY:
            return
        self.listener.leadership.save_checkpoint(
            {**position, "event_time": event_time, "saved_at": time.time()}
        )
        self.saved, self.saved_at = position, now
        metrics.FRESHNESS.checkpointed(event_time)
