"""The worker's start-up check of the read replicas: ones that cannot be waited for."""

from __future__ import annotations

import logging

import pymysql

from adapters.mysql.replicas import ReplicaError, check_replicas
from config import Settings
from tasks.work.runtime import connect_mysql

log = logging.getLogger(__name__)


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
