"""The Celery app: settings that keep tasks from being lost, queues, routes, the beat schedule."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_received,
    worker_init,
    worker_process_shutdown,
    worker_ready,
)
from kombu import Queue

from config import ConfigError, Settings, load_settings
from config.sentinel import is_sentinel_url, parse_sentinel_url

# Stable task names: operators call them with `celery -A tasks call <name>`.
INVALIDATE_TASK = "primer_cache.invalidate"
REPLICA_FOLLOWUP_TASK = "primer_cache.replica_followup"
WARM_TASK = "primer_cache.warm"
WARM_ALL_TASK = "primer_cache.warm_all"
REFRESH_TASK = "primer_cache.refresh"
ENSURE_PARTITIONS_TASK = "primer_cache.ensure_partitions"
CHECK_TASK = "primer_cache.check_sample"


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"primer-cache: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


settings = _settings()


def queue_name(settings: Settings, family: str) -> str:
    """The queue of a task family ("invalidate", "warm", "maintenance") under these settings."""
    return f"{settings.celery.queue_prefix}.{family}"


INVALIDATE_QUEUE = queue_name(settings, "invalidate")
WARM_QUEUE = queue_name(settings, "warm")
MAINTENANCE_QUEUE = queue_name(settings, "maintenance")
QUEUES = (INVALIDATE_QUEUE, WARM_QUEUE, MAINTENANCE_QUEUE)


def kombu_broker(broker_url: str) -> tuple[str, dict[str, Any]]:
    """The broker URL as kombu takes it, and the transport options it needs: a
    redis+sentinel:// URL becomes kombu's `sentinel://h1;sentinel://h2` with the service as
    transport option master_name (kombu asks the sentinels for the primary, and again after
    a failover)."""
    if is_sentinel_url(broker_url):
        parsed = parse_sentinel_url(broker_url, "PRIMER_BROKER_URL", [])
        if parsed is not None:
            return parsed.kombu_url(), parsed.kombu_options()
    return broker_url, {}


def result_backend(broker_url: str) -> str:
    """Where task results go. Only `primer-cache warm` reads any (every other send ignores
    its result), so: the broker Redis itself, or with RabbitMQ `rpc://` (results come back as
    messages to the caller that waits for them; Celery 5 has no `amqp` backend)."""
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        return broker_url
    if is_sentinel_url(broker_url):
        return kombu_broker(broker_url)[0]  # Celery's redis backend speaks sentinel:// too
    return "rpc://"


BROKER_URL, SENTINEL_OPTIONS = kombu_broker(settings.celery.broker_url)
app = Celery("primer_cache", broker=BROKER_URL, backend=result_backend(settings.celery.broker_url))
app.conf.update(
    # JSON only: no pickle on the wire.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # At-least-once: a task is acked after it ran, and redelivered if its worker died.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # A Redis broker redelivers an unacked message (its worker died) only after this long;
    # invalidations do not wait for it: the listener publishes a batch again when it is not
    # done within listener.redeliver_after_s. RabbitMQ requeues a dead consumer's at once.
    broker_transport_options={"visibility_timeout": 600, **SENTINEL_OPTIONS},
    result_backend_transport_options=SENTINEL_OPTIONS,
    # Never give up on a broker that is away: reconnect (with backoff) until it is back.
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    # A task running when the broker connection drops is redelivered anyway (acks_late).
    worker_cancel_long_running_tasks_on_connection_loss=True,
    result_expires=3600,
    # Durable queues, persistent messages: a restarted RabbitMQ keeps what it had.
    task_queues=[Queue(name, durable=True) for name in QUEUES],
    task_default_delivery_mode="persistent",
    task_default_queue=INVALIDATE_QUEUE,
    task_routes={
        INVALIDATE_TASK: {"queue": INVALIDATE_QUEUE},
        REPLICA_FOLLOWUP_TASK: {"queue": INVALIDATE_QUEUE},
        WARM_TASK: {"queue": WARM_QUEUE},
        WARM_ALL_TASK: {"queue": WARM_QUEUE},
        REFRESH_TASK: {"queue": WARM_QUEUE},
        ENSURE_PARTITIONS_TASK: {"queue": MAINTENANCE_QUEUE},
        CHECK_TASK: {"queue": MAINTENANCE_QUEUE},
    },
    worker_hijack_root_logger=False,
    timezone="UTC",
    enable_utc=True,
)
# A send from inside a task is retried a little (broker blips); past that the caller decides:
# log and go on where only warmth is lost, fail (and be retried or redelivered) otherwise.
SEND_RETRY = {"max_retries": 3, "interval_start": 0.1, "interval_step": 0.2}


def send(name: str, args: list[Any], queue: str, countdown: float | None = None) -> None:
    """Queue task `name` from a task. Nobody waits for its result: without ignore_result
    every send would also subscribe to a result channel. Raises BrokerError when it cannot."""
    app.send_task(
        name,
        args=args,
        queue=queue,
        countdown=countdown,
        ignore_result=True,
        retry=True,
        retry_policy=SEND_RETRY,
    )


app.conf.beat_schedule = {
    "warm-all-before-ttl": {
        "task": WARM_ALL_TASK,
        "schedule": float(settings.warm.refresh_seconds),
        "options": {"queue": WARM_QUEUE},
    },
    "ensure-partitions-daily": {
        "task": ENSURE_PARTITIONS_TASK,
        "schedule": crontab(minute=7, hour=settings.partitions.schedule_hour),
    },
}
if settings.check.sample:
    # The continuous consistency check (off by default): a random sample of cached keys.
    app.conf.beat_schedule["check-sample"] = {
        "task": CHECK_TASK,
        "schedule": float(settings.check.every_s),
        "options": {"queue": MAINTENANCE_QUEUE},
    }


@worker_init.connect
def _refuse_bad_replicas(**_: object) -> None:
    """A worker that cannot wait for the read replicas would invalidate too early: refuse to
    start (exit 2, like bad configuration)."""
    from tasks.health import replica_problem

    problem = replica_problem(settings)
    if problem:
        print(f"primer-cache worker: {problem}", file=sys.stderr)
        raise SystemExit(2)


@worker_init.connect
def _warn_if_broker_evicts(**_: object) -> None:
    from tasks.health import broker_eviction_warning

    warning = broker_eviction_warning(settings)
    if warning:
        logging.getLogger("primer_cache").warning(warning)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: object) -> None:
    # PRIMER_LOG_FORMAT=json: the worker's and beat's lines as JSON objects too.
    from adapters.observability import logs

    logs.reformat(logger)


@worker_init.connect
def _load_lease_library(**_: object) -> None:
    """The warms and refreshes write through the lease functions: load them at start, and
    refuse to start on a Redis without functions."""
    import redis

    from adapters.redis.connection import RedisConnectError, connect_redis
    from adapters.redis.leases import LeaseLibraryError, load_library

    try:
        load_library(connect_redis(settings.cache.url, socket_connect_timeout=5))
    except LeaseLibraryError as exc:
        print(f"primer-cache worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except (
        redis.RedisError,
        RedisConnectError,
    ) as exc:  # the tasks load it on first use once Redis is back
        logging.getLogger("primer_cache").warning("could not load the lease functions: %s", exc)


@worker_init.connect
def _serve_metrics(**_: object) -> None:
    # The main process, before the pool forks: it serves what every child records.
    if settings.metrics.worker_port:
        from tasks import metrics

        metrics.serve(settings.metrics.worker_port, settings.cache.url, settings.metrics.addr)


@worker_ready.connect
def _start_heartbeat(**_: object) -> None:
    """The main process's heartbeat (tasks.liveness), before any batch is received."""
    from tasks.liveness import worker_beat

    worker_beat(settings)


@task_received.connect
def _hold_batch(request: Any = None, **_: object) -> None:
    """The main process received a listener batch: record it as this worker's, so that the
    listener publishes it again as soon as this worker is dead (adapters.redis.liveness)."""
    if request is None or request.task_name not in (INVALIDATE_TASK, REPLICA_FOLLOWUP_TASK):
        return
    from tasks.liveness import worker_beat

    args = request.args
    if args:
        worker_beat(settings).hold(args[0])


@worker_process_shutdown.connect
def _child_ended(pid: int | None = None, **_: object) -> None:
    from tasks import metrics

    metrics.mark_process_dead(pid or os.getpid())
