"""Per-process connections for tasks and commands: the cache Redis, MySQL, the read replicas,
and the broker the work queues follow-up tasks on.

Created lazily and again after a fork, so Celery's prefork children never share a socket.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pymysql
import redis
from celery import Celery

from adapters import broker
from adapters.mysql.replicas import ReplicaWaiter
from adapters.mysql.sources import SourcePicker
from adapters.redis.connection import connect_redis
from adapters.redis.replica_ack import ReplicaAck
from config import Settings
from core.keys import KeyFormat


class Runtime:
    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        """`celery`: the app to queue tasks through (the worker's own; default: one made for
        these settings on first send, as for a command)."""
        self.settings = settings
        self._celery = celery
        self.keys = KeyFormat(settings.cache.key_prefix, settings.cache.key_template)
        self._pid = os.getpid()
        self._redis: redis.Redis | None = None
        self._db: pymysql.Connection | None = None
        self._replicas: ReplicaWaiter | None = None
        self._ack: ReplicaAck | None = None

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._redis = None
            self._db = None
            self._replicas = None  # the parent's sockets stay the parent's
            self._ack = None

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = broker.celery_app(self.settings)
        return self._celery

    def send(self, name: str, args: list[Any], family: str, countdown: float | None = None) -> None:
        """Queue task `name` on its family's queue, ignoring its result (adapters.broker.send);
        raises kombu's OperationalError when the broker refuses it."""
        queue = broker.queue_name(self.settings, family)
        broker.send(self.celery, name, args, queue, countdown=countdown)

    @property
    def redis(self) -> redis.Redis:
        self._check_fork()
        if self._redis is None:
            self._redis = connect_redis(
                self.settings.cache.url,
                socket_timeout=30,
                socket_connect_timeout=5,
                health_check_interval=30,
            )
        return self._redis

    @property
    def replica_ack(self) -> ReplicaAck:
        """Confirms that the cache Redis's replicas have the deletes (cache.wait_replicas)."""
        self._check_fork()
        if self._ack is None:
            s = self.settings
            self._ack = ReplicaAck(
                self.redis, s.cache.state_prefix, s.cache.wait_replicas, s.cache.wait_timeout_ms
            )
        return self._ack

    @property
    def replicas(self) -> ReplicaWaiter:
        """Waits for the read replicas the primer server reads from (none configured: no-op)."""
        self._check_fork()
        if self._replicas is None:
            self._replicas = ReplicaWaiter(self.settings.replicas)
        return self._replicas

    def db(self) -> pymysql.Connection:
        """A live autocommit connection to the primer database (reconnects when dropped)."""
        self._check_fork()
        if self._db is not None:
            try:
                self._db.ping(reconnect=False)
            except pymysql.Error:
                self.drop_db()  # went away: a fresh connection below
        if self._db is None:
            self._db = connect_mysql(self.settings)
        return self._db

    def drop_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(pymysql.Error):
                self._db.close()
            self._db = None


def connect_mysql(settings: Settings, **extra: Any) -> pymysql.Connection:
    """The primary among the configured sources (adapters.mysql.sources): after a failover, the
    replica promoted in its place."""
    return SourcePicker(settings.sources).connect(
        read_timeout=60, write_timeout=60, charset="utf8mb4", **extra
    )


_runtime: Runtime | None = None


def runtime(settings: Settings, celery: Celery | None = None) -> Runtime:
    """The process's Runtime, made on first use from `settings` (and `celery`, see Runtime)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(settings, celery)
    return _runtime
