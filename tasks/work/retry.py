"""Which faults a task retries, and how: connection faults only, with backoff and jitter.

Anything else is a bug or bad data and must surface, not loop. A broker that refuses a
publish from inside a task is a connection fault too: kombu raises its OperationalError once
the send's own retries are spent (adapters.broker.send), wrapping the transport's (amqp, redis)
connection errors; a raw socket error may escape before kombu wraps it.
"""

from __future__ import annotations

from typing import Any

import pymysql
import redis
from kombu.exceptions import OperationalError as BrokerError

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    BrokerError,
    ConnectionError,  # the builtin: a socket reset or refused before kombu wrapped it
)


def retry_on(*errors: type[BaseException]) -> dict[str, Any]:
    """`@app.task` options: retry on these errors, 0.5 s doubling to 30 s, jittered."""
    return {
        "autoretry_for": errors,
        "retry_backoff": 0.5,
        "retry_backoff_max": 30,
        "retry_jitter": True,
    }


PROMPT_RETRY_S = 0.25


def retry_promptly(*errors: type[BaseException]) -> dict[str, Any]:
    """`@app.task` options for invalidations: retry on these errors every PROMPT_RETRY_S, not
    with a growing backoff. A backoff doubling to 30 s left a batch waiting seconds after its
    server came back (a cache Redis failover: up to 4 s more); an invalidation is what keeps
    answers fresh, and while its server is away an attempt costs one connection refused and a
    publish. The batches in flight are few (`listener.max_in_flight`)."""
    return {"autoretry_for": errors, "retry_backoff": False, "default_retry_delay": PROMPT_RETRY_S}
