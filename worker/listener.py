"""The listener loop: lead, stream the binlog, publish batches, checkpoint after each publish.

At-least-once: a checkpoint is written only after the broker accepted every batch up to it,
so a crash replays (idempotent) invalidations and never skips one.
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

from config import Settings
from core.batch import Batch
from worker import metrics
from worker.batcher import BatchBuilder, Transaction, position_reached, position_text
from worker.flow import InFlight
from worker.leader import Leadership, LeadershipLost
from worker.publisher import Publisher
from worker.server_check import ServerInfo, check_server, current_position
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
IDLE_CHECKPOINT_EVERY = 1.0
CATCH_UP_WINDOW = 1.0  # how long a batch may grow while catching up on a backlog


class ReaderError(Exception):
    """Raised when the binlog reader stopped on something other than a connection fault."""


class Listener:
    def __init__(self, settings: Settings, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.name = f"listener[server_id={settings.server_id}]"
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_timeout=10, socket_connect_timeout=5
        )
        self.leadership = Leadership(self.redis, settings.state_prefix, settings.leader_ttl_ms)
        self.publisher = publisher or Publisher()
        self.stopping = threading.Event()

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
            self.leadership.release()

    def check_settings(self) -> ServerInfo:
        conn = self._connect()
        try:
            return check_server(conn)
        finally:
            conn.close()

    def _log_retry(self, state: Any) -> None:
        metrics.RESTARTS.inc()
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0
        log.warning(
            "%s: %s; reconnecting in %.2f seconds",
            self.name,
            exc,
            delay,
            exc_info=exc if isinstance(exc, ReaderError) else None,
        )

    def _connect(self) -> pymysql.Connection:
        return pymysql.connect(
            database=self.settings.mysql.database,
            autocommit=True,
            connect_timeout=5,
            **self.settings.mysql.connect_kwargs(),
        )

    # ---- one leadership term ----------------------------------------------------------

    def _lead_once(self) -> None:
        if not self._wait_for_leadership():
            return
        metrics.IS_LEADER.set(1)
        try:
            self._stream()
        except LeadershipLost as exc:
            log.warning("%s: %s; standing by", self.name, exc)
        finally:
            metrics.IS_LEADER.set(0)

    def _wait_for_leadership(self) -> bool:
        announced = False
        while not self.stopping.is_set():
            if self.leadership.try_acquire():
                return True
            if not announced:
                log.info("%s: leader is %s; waiting", self.name, self.leadership.holder())
                announced = True
            self.stopping.wait(self.leadership.renew_interval)
        return False

    def _stream(self) -> None:
        conn = self._connect()
        try:
            server = check_server(conn)
            checkpoint = self.leadership.load_checkpoint()
            if checkpoint is None:
                # The flush re-warms every pattern once it has swept.
                checkpoint = self._cold_start(conn, server, "no checkpoint (first start or lost)")
            elif self.settings.warm_patterns:
                self.publisher.warm_all()
            backlog_end = current_position(conn, server)
        finally:
            conn.close()
        self.publisher.connect()
        log.info("%s: streaming from %s", self.name, position_text(checkpoint))
        events: queue.Queue[Transaction | BaseException] = queue.Queue(maxsize=50_000)
        reader = BinlogReader(self.settings, server, checkpoint, events)
        reader.start()
        started = time.monotonic()
        try:
            self._consume(events, backlog_end)
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
                return
            if time.monotonic() - started > HEALTHY_AFTER:
                # A stream that ran well: reconnect at once, with the backoff reset.
                log.warning("%s: stream broke (%s); reconnecting now", self.name, exc)
                return
            raise
        finally:
            reader.stop()

    def _cold_start(self, conn: pymysql.Connection, server: ServerInfo, why: str) -> dict[str, Any]:
        position = current_position(conn, server)
        log.warning(
            "%s: COLD START (%s): flushing every primer key and starting at %s",
            self.name,
            why,
            position_text(position),
        )
        self.publisher.invalidate(
            Batch(flush=True, reason=f"cold start: {why}", upto=position_text(position))
        )
        checkpoint = {**position, "event_time": 0, "saved_at": time.time()}
        self.leadership.save_checkpoint(checkpoint)
        return checkpoint

    def _consume(
        self, events: queue.Queue[Transaction | BaseException], backlog_end: dict[str, Any]
    ) -> None:
        s = self.settings
        builder = BatchBuilder()
        flow = InFlight(self.redis, s.state_prefix, self.leadership.token, s.max_in_flight)
        # While the backlog written before this start is read, latency is spent already:
        # fewer, larger batches (each one sweep) catch up faster.
        window = CATCH_UP_WINDOW
        started_at = 0.0  # when the waiting batch got its first transaction
        published_at = 0.0
        saved_at = time.monotonic()
        while not self.stopping.is_set():
            self.leadership.renew_if_due()
            try:
                item = events.get(timeout=self._wait(builder))
            except queue.Empty:
                item = None
            if isinstance(item, BaseException):
                if isinstance(item, TRANSIENT):
                    raise item
                # Not a connection fault: an event the library could not read, say. Never
                # exit on one bad event: log it, and resume from the checkpoint after a pause.
                raise ReaderError(f"binlog reader stopped: {item!r}") from item
            now = time.monotonic()
            if item is not None:
                if not builder.complete:
                    started_at = now
                builder.add(item)
            if not builder.complete:
                continue
            readable = not events.empty()
            if (
                window == CATCH_UP_WINDOW
                and not readable
                and position_reached(builder.position, backlog_end)
            ):
                window = s.batch_max_wait_ms / 1000.0
            # Coalesce what is already readable, and after a publish let the next batch
            # grow for up to a window: one task when idle, few large ones under load.
            if (
                builder.rows < s.batch_max_changes
                and now < started_at + window
                and (readable or now < published_at + window)
            ):
                continue
            # While the workers are behind, the batch goes on growing (its images are a set).
            if builder.has_work and flow.full():
                continue
            metrics.TRANSACTIONS.inc(builder.transactions)
            batch, position, event_time = builder.take()
            assert position is not None
            if batch:
                self.publisher.invalidate(replace(batch, term=self.leadership.token))
                flow.sent()
                metrics.BATCHES.inc()
                published_at = now
                log.debug(
                    "published %d images of %d transactions up to %s",
                    len(batch.images),
                    batch.transactions,
                    batch.upto,
                )
            elif now - saved_at < IDLE_CHECKPOINT_EVERY:
                continue  # nothing published: the checkpoint can wait a little
            self.leadership.save_checkpoint(
                {**position, "event_time": event_time, "saved_at": time.time()}
            )
            saved_at = now
            metrics.LAST_EVENT.set(event_time)

    def _wait(self, builder: BatchBuilder) -> float:
        """How long to wait for the next transaction: while transactions wait to be published,
        only a few ms (their batch may come due); otherwise until the lock needs renewing."""
        return 0.002 if builder.complete else self.leadership.renew_interval / 2
