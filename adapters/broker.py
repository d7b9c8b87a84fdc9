"""The Celery broker as every publisher and the worker see it: task names, queues, routes, wire
settings, and a configured app to send through (the listener's publisher, the CLI, the worker's
own app all take their configuration from here, so they cannot disagree)."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery
from kombu import Queue

from adapters.redis.connection import RedisConnectError, connect_redis
from config import Settings
from config.secrets import redact_url
from config.sentinel import is_sentinel_url, parse_sentinel_url

# Stable task names: operators call them with `celery -A tasks call <name>`.
INVALIDATE_TASK = "primer_cache.invalidate"
REPLICA_FOLLOWUP_TASK = "primer_cache.replica_followup"
WARM_TASK = "primer_cache.warm"
WARM_ALL_TASK = "primer_cache.warm_all"
REFRESH_TASK = "primer_cache.refresh"
ENSURE_PARTITIONS_TASK = "primer_cache.ensure_partitions"
CHECK_TASK = "primer_cache.check_sample"

# Task families, each with its queue (<queue_prefix>.<family>).
INVALIDATE = "invalidate"
WARM = "warm"
MAINTENANCE = "maintenance"
FAMILIES = (INVALIDATE, WARM, MAINTENANCE)
FAMILY_OF_TASK = {
    INVALIDATE_TASK: INVALIDATE,
    REPLICA_FOLLOWUP_TASK: INVALIDATE,
    WARM_TASK: WARM,
    WARM_ALL_TASK: WARM,
    REFRESH_TASK: WARM,
    ENSURE_PARTITIONS_TASK: MAINTENANCE,
    CHECK_TASK: MAINTENANCE,
}

# A send from inside a task is retried a little (broker blips); past that the caller decides:
# log and go on where only warmth is lost, fail (and be retried or redelivered) otherwise.
SEND_RETRY = {"max_retries": 3, "interval_start": 0.1, "interval_step": 0.2}


def queue_name(settings: Settings, family: str) -> str:
    """The queue of a task family ("invalidate", "warm", "maintenance") under these settings."""
    return f"{settings.celery.queue_prefix}.{family}"


def queues(settings: Settings) -> tuple[str, ...]:
    """Every queue of these settings, in FAMILIES order."""
    return tuple(queue_name(settings, family) for family in FAMILIES)


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


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings that keep tasks from being lost: broker, serialisation, delivery,
    queues and routes."""
    url, sentinel_options = kombu_broker(settings.celery.broker_url)
    return {
        "broker_url": url,
        "result_backend": result_backend(settings.celery.broker_url),
        # JSON only: no pickle on the wire.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # At-least-once: a task is acked after it ran, and redelivered if its worker died.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A Redis broker redelivers an unacked message (its worker died) only after this long;
        # invalidations do not wait for it: the listener publishes a batch again when it is not
        # done within listener.redeliver_after_s. RabbitMQ requeues a dead consumer's at once.
        "broker_transport_options": {"visibility_timeout": 600, **sentinel_options},
        "result_backend_transport_options": sentinel_options,
        # Never give up on a broker that is away: reconnect (with backoff) until it is back.
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # A task running when the broker connection drops is redelivered anyway (acks_late).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "result_expires": 3600,
        # Durable queues, persistent messages: a restarted RabbitMQ keeps what it had.
        "task_queues": [Queue(name, durable=True) for name in queues(settings)],
        "task_default_delivery_mode": "persistent",
        "task_default_queue": queue_name(settings, INVALIDATE),
        "task_routes": {
            task: {"queue": queue_name(settings, family)} for task, family in FAMILY_OF_TASK.items()
        },
    }


def celery_app(settings: Settings) -> Celery:
    """A Celery app that sends to this broker (a process that publishes but runs no task)."""
    app = Celery("primer_cache", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def send(
    app: Celery, name: str, args: list[Any], queue: str, countdown: float | None = None
) -> None:
    """Queue task `name` from a task. Nobody waits for its result: without ignore_result
    every send would also subscribe to a result channel. Raises kombu's OperationalError
    when the broker refuses it after SEND_RETRY."""
    app.send_task(
        name,
        args=args,
        queue=queue,
        countdown=countdown,
        ignore_result=True,
        retry=True,
        retry_policy=SEND_RETRY,
    )


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
