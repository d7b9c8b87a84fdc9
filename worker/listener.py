"""The listener process: wait for the leader lock, then stream terms until stopped.

A standby warms up (the broker connection, the fast lane's first scan) and polls the lock;
the leader streams one term after another (worker.term_runner), reconnecting with a backoff
after a fault. The parts of a term: worker.term_runner (where it starts, the reader),
worker.batch_loop (publishing batches), worker.completion_tracker (redelivery and the
checkpoint), worker.leader (the lock), worker.signals (warm and cold stop).
"""

from __future__ import annotations

import gc
import logging
import random
import sys
import threading
import time

import pymysql
import redis

from adapters import unreachable
from adapters.mysql.replicas import check_replicas
from adapters.mysql.sources import SourcePicker
from adapters.redis.connection import connect_redis
from config import Settings
from core.backoff import Reconnects
from worker import metrics
from worker.fast_lane import FastLane
from worker.fast_lane_stream import FastLaneStream
from worker.faults import TRANSIENT, ReaderError
from worker.leader import Leadership, LeadershipLost
from worker.publisher import Publisher
from worker.server_check import ServerInfo, check_server
from worker.signals import install_warm_stop
from worker.term import ListenerParts
from worker.term_runner import TermRunner

log = logging.getLogger(__name__)

STANDBY_POLL_S = 0.05  # how often a standby tries the leader lock (a takeover waits this long)
# Reconnecting after a fault: 0.1 s doubling to 0.5 s, so that the end of an outage (a failover
# of the database or the cache Redis) is noticed within half a second; an attempt costs a few
# connections. A term that ran HEALTHY_S starts the doubling afresh.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 0.5
HEALTHY_S = 10.0
RETRY_LOG_S = 10.0  # past the first attempts of an outage, one line this often
STEP_ASIDE_AFTER = 3  # failed terms in a row after which a leader lets its lock go
SWITCH_INTERVAL_S = 0.0005  # how long a thread may hold the GIL while another waits


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
        self.publisher = publisher or Publisher(settings)
        # The binlog's source: the primary among PRIMER_MYSQL_URL's sources (adapters.mysql.sources)
        self.sources = SourcePicker(settings.sources)
        self.stopping = threading.Event()
        # Deletes the known keys a change affects as soon as it is read (worker.fast_lane).
        self.fast_lane = FastLane(settings) if settings.listener.fast_lane_max_keys > 0 else None
        # ... and its own stream of the binlog while no term of ours reads at the head (a
        # standby, a takeover's replay, a term a cache Redis outage ended).
        self.follower = (
            FastLaneStream(settings, self.fast_lane, self.name)
            if self.fast_lane is not None
            else None
        )
        self.terms = TermRunner(
            ListenerParts(
                self.name,
                settings,
                self.redis,
                self.leadership,
                self.publisher,
                self.sources,
                self.fast_lane,
                self.follower,
                self.stopping,
            )
        )
        self._warmed_up = False
        self._logged_retry_at = float("-inf")

    # ---- process lifetime -------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        install_warm_stop(self.stopping, self.name)

    def run(self) -> None:
        """Run until stopped; server settings that are wrong raise ServerSettingsError."""
        self.check_settings()
        reconnects = Reconnects(RECONNECT_FIRST_S, RECONNECT_MAX_S, HEALTHY_S, STEP_ASIDE_AFTER)
        try:
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    self._lead_once()
                    reconnects.succeeded()
                except (*TRANSIENT, ReaderError) as exc:
                    delay = reconnects.failed(time.monotonic() - began)
                    delay += random.uniform(0, RECONNECT_FIRST_S)  # replicas apart
                    self._log_retry(exc, delay, reconnects.failures)
                    if reconnects.step_aside:
                        # Failing again and again (perhaps only its own path to a server is
                        # broken): a standby may do better; alone, it takes the lock back.
                        self.leadership.release()
                    self.stopping.wait(delay)
        finally:
            if self.follower is not None:
                self.follower.stop()
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

    def _log_retry(self, exc: BaseException, delay: float, failures: int) -> None:
        metrics.RESTARTS.inc()
        now = time.monotonic()
        if failures > 3 and now - self._logged_retry_at < RETRY_LOG_S:
            return  # a long outage: one line every RETRY_LOG_S, the metric counts them all
        self._logged_retry_at = now
        log.warning(
            "%s: %s; reconnecting in %.2f seconds (attempt %d)",
            self.name,
            # the server named (password hidden), as the CLI names it
            unreachable.describe(exc, self.settings) or exc,
            delay,
            failures,
            exc_info=exc if isinstance(exc, ReaderError) else None,
        )

    def _connect(self) -> pymysql.Connection:
        return self.sources.connect()

    # ---- one leadership term ----------------------------------------------------------

    def _lead_once(self) -> None:
        self._warm_up()
        if not self._wait_for_leadership():
            return
        self.terms.took_lead_at = time.monotonic()
        self.leadership.start_renewing()
        metrics.FRESHNESS.lead(True)
        try:
            self.terms.run()
        except LeadershipLost as exc:
            log.warning("%s: %s; standing by", self.name, exc)
        finally:
            self.leadership.stop_renewing()
            metrics.FRESHNESS.lead(False)
            if self.fast_lane is not None:
                self.fast_lane.stand_by()
            if self.follower is not None and not self.stopping.is_set():
                # from where the term's fast lane got to: no delete it owed is skipped
                self.follower.follow(self.terms.fast_laned_upto)

    def _warm_up(self) -> None:
        """Before waiting for the lock: what a first stream would pay for at takeover (Celery's
        lazy imports, queue declarations and the broker connection: over a second), and one
        SCAN for the fast lane's snapshot, so that a standby streams the moment the lock is
        free and its fast lane knows the key names at once (the scans go on in the background
        while it stands by: worker.fast_lane). Once per process."""
        if self._warmed_up:
            return
        self.publisher.connect()
        if self.fast_lane is not None:
            try:
                self.fast_lane.scan()
            except redis.RedisError as exc:  # only speed is lost: the background scans follow
                log.warning("%s: fast lane: the first scan failed (%s)", self.name, exc)
            self.fast_lane.stand_by()
        if self.follower is not None:
            self.follower.follow(None)  # from the binlog's end: a standby deletes at once
        # What start-up made (Celery's and the library's imports) is never garbage: out of
        # the collector's reach, a full collection no longer walks it (27 ms pauses seen in
        # the loop at 500 commits/s, issue 21).
        gc.freeze()
        # The fast lane's deletes share the GIL with the binlog reader, the term's loop, the
        # fast lane's scans and the lock's renewer. A thread woken by a transaction waits for
        # the GIL up to the switch interval (5 ms by default) while another computes: shorter,
        # that wait stops being the tail of commit -> gone (issue 21).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._warmed_up = True

    def _wait_for_leadership(self) -> bool:
        announced = False
        while not self.stopping.is_set():
            metrics.FRESHNESS.tick()
            if self.leadership.try_acquire():
                return True
            # A leader that died is noticed by its connection dropping, not its lock's TTL.
            if self.leadership.take_over_from_a_dead_holder() and self.leadership.try_acquire():
                return True
            if not announced:
                log.info("%s: leader is %s; waiting", self.name, self.leadership.holder())
                announced = True
            self.stopping.wait(STANDBY_POLL_S)
        return False
