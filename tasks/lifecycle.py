"""The worker's and beat's process hooks (Celery signals): start-up checks, the log format, the
metrics endpoint, the heartbeat, the batches the main process receives, pool children that
end."""

from __future__ import annotations

import logging
import os
from typing import Any

import redis
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_received,
    worker_init,
    worker_process_shutdown,
    worker_ready,
)

from adapters.broker import INVALIDATE_TASK, REPLICA_FOLLOWUP_TASK, broker_eviction_warning
from adapters.observability import logs
from adapters.redis.connection import RedisConnectError, connect_redis
from adapters.redis.leases import LeaseLibraryError, load_library
from tasks.app import refuse_to_start, settings
from tasks.work import metrics
from tasks.work.health import replica_problem
from tasks.work.liveness import worker_beat

log = logging.getLogger("primer_cache")


# Before the pool forks, in this order; each its own receiver, so that one that fails (Celery
# logs it) does not keep the others from running.


@worker_init.connect
def _refuse_bad_replicas(**_: object) -> None:
    """A worker that cannot wait for the read replicas would invalidate too early: refuse to
    start (exit 2, like bad configuration)."""
    problem = replica_problem(settings())
    if problem:
        refuse_to_start("primer-cache worker", [problem])


@worker_init.connect
def _warn_if_broker_evicts(**_: object) -> None:
    warning = broker_eviction_warning(settings())
    if warning:
        log.warning(warning)


@worker_init.connect
def _load_lease_library(**_: object) -> None:
    """The warms and refreshes write through the lease functions: load them at start, and
    refuse to start on a Redis without functions."""
    try:
        load_library(connect_redis(settings().cache.url, socket_connect_timeout=5))
    except LeaseLibraryError as exc:
        refuse_to_start("primer-cache worker", [str(exc)])
    except (redis.RedisError, RedisConnectError) as exc:
        # the tasks load it on first use once Redis is back
        log.warning("could not load the lease functions: %s", exc)


@worker_init.connect
def _serve_metrics(**_: object) -> None:
    # The main process, before the pool forks: it serves what every child records.
    loaded = settings()
    if loaded.metrics.worker_port:
        metrics.serve(loaded.metrics.worker_port, loaded.cache.url, loaded.metrics.addr)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: object) -> None:
    # PRIMER_LOG_FORMAT=json: the worker's and beat's lines as JSON objects too.
    logs.reformat(logger)


@worker_ready.connect
def _start_heartbeat(**_: object) -> None:
    """The main process's heartbeat (tasks.work.liveness), before any batch is received."""
    worker_beat(settings())


@task_received.connect
def _hold_batch(request: Any = None, **_: object) -> None:
    """The main process received a listener batch: record it as this worker's, so that the
    listener publishes it again as soon as this worker is dead (adapters.redis.liveness)."""
    if request is None or request.task_name not in (INVALIDATE_TASK, REPLICA_FOLLOWUP_TASK):
        return
    args = request.args
    if args:
        worker_beat(settings()).hold(args[0])


@worker_process_shutdown.connect
def _child_ended(pid: int | None = None, **_: object) -> None:
    metrics.mark_process_dead(pid or os.getpid())
