"""Binlog events the listener could not read, kept in Redis until an operator acknowledges.

The listener falls to the safe side on such an event (a flush of every primer key, then it
steps past the event), but the cause stays: a column type neither decoder reads (MariaDB's
COMPRESSED columns, the pre-10.1 temporal format) comes back with every write to that table,
and each one flushes the cache. So the first such event makes `primer-cache status` unhealthy,
and it stays so until `primer-cache ack-undecodable` clears the record (the count and the last
event seen are shown by both).
"""

from __future__ import annotations

import time
from typing import Any

import redis

from core.keys import LISTENER_TAG


def undecodable_key(state_prefix: str) -> str:
    # the listener's hash tag: one slot with its other state on a Redis Cluster
    return f"{state_prefix}{LISTENER_TAG}:undecodable"


def record(client: redis.Redis, state_prefix: str, where: str, error: str) -> None:
    """Count one undecodable event and keep it as the last one (one round trip)."""
    key = undecodable_key(state_prefix)
    pipe = client.pipeline(transaction=True)
    pipe.hincrby(key, "count", 1)
    pipe.hset(key, mapping={"last_at": f"{time.time():.3f}", "where": where, "error": error})
    pipe.hsetnx(key, "first_at", f"{time.time():.3f}")
    pipe.execute()


def read(client: redis.Redis, state_prefix: str) -> dict[str, Any] | None:
    """The record of the events not acknowledged yet; None when there are none."""
    return _info(client.hgetall(undecodable_key(state_prefix)))


def acknowledge(client: redis.Redis, state_prefix: str) -> dict[str, Any] | None:
    """Clear the record (the operator has seen it); returns what it held."""
    key = undecodable_key(state_prefix)
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(key)
    pipe.delete(key)
    raw, _ = pipe.execute()
    return _info(raw)


def _info(raw: dict[Any, Any]) -> dict[str, Any] | None:
    if not raw:
        return None
    info: dict[str, Any] = {_text(k): _text(v) for k, v in raw.items()}
    info["count"] = int(info.get("count", 0))
    return info


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
