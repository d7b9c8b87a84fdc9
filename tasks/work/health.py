"""Start-up checks shared by the processes: a broker Redis that may evict queued tasks, read
replicas that cannot be waited for."""

from __future__ import annotations

import logging

import pymysql
import redis

from adapters.mysql.replicas import ReplicaError, check_replicas
from adapters.redis.connection import RedisConnectError, connect_redis
from config import Settings
from config.secrets import redact_url
from tasks.work.runtime import connect_mysql

log = logging.getLogger(__name__)


def broker_eviction_warning(settings: Settings) -> str | None:
    """A loud warning when the broker is a Redis that may evict keys (Celery loses messages)."""
    if not settings.celery.broker_url.startswith(
        ("redis://", "rediss://", "unix://", "redis+sentinel:")
    ):
        return None
    try:
        client = connect_redis(settings.celery.broker_url, socket_connect_timeout=3)
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except (redis.RedisError, RedisConnectError):
        # unreachable, or CONFIG refused (a least-privilege ACL user): quiet, the connection
        # errors speak for themselves
        return None
    if policy and policy != "noeviction" and not policy.startswith("volatile"):
        return (
            f"!!! BROKER REDIS {redact_url(settings.celery.broker_url)} HAS "
            f"maxmemory-policy={policy}: "
            "it may evict queued tasks and lose invalidations. "
            "Use a broker Redis with noeviction. !!!"
        )
    return None


def replica_problem(settings: Settings) -> str | None:
    """What is wrong with the configured read replicas (None: nothing, or none configured).

    A primary that cannot be reached is not the replicas' fault: the worker starts and
    says so (the listener checks again when it starts)."""
    if not settings.replicas:
        return None
    try:
        primary = connect_mysql(settings)
    except pymysql.Error as exc:
        log.warning("cannot check the read replicas: primary unreachable: %s", exc)
        return None
    try:
        where = f"{settings.mysql.host}:{settings.mysql.port}"
        check_replicas(primary, settings.replicas, where)
    except ReplicaError as exc:
        return str(exc)
    finally:
        primary.close()
    return None
