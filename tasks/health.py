"""Start-up checks shared by the processes."""

from __future__ import annotations

import redis

from config import Settings


def broker_eviction_warning(settings: Settings) -> str | None:
    """A loud warning when the broker is a Redis that may evict keys (Celery loses messages)."""
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    try:
        client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=3)
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.RedisError:
        return None  # unreachable or CONFIG disabled: the connection errors speak for themselves
    if policy and policy != "noeviction" and not policy.startswith("volatile"):
        return (
            f"!!! BROKER REDIS {settings.broker_url} HAS maxmemory-policy={policy}: it may evict "
            "queued tasks and lose invalidations. Use a broker Redis with noeviction. !!!"
        )
    return None
