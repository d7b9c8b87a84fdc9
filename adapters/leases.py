"""The lease guard in Redis: load the `primer_cache` function library, and call it.

Both the listener and the worker load the library at start (FUNCTION LOAD REPLACE, on every
primary of a cluster); a call that finds it missing (a Redis restarted without persistence)
loads it again and retries once.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import redis

from adapters.lease_library import FILL, LIBRARY, READ, WARM_LEASE

log = logging.getLogger(__name__)

MIN_VERSION = (7, 0)


class LeaseLibraryError(Exception):
    """Raised when the function library cannot be loaded: a Redis older than 7.0 (no
    functions), or one that refuses FUNCTION LOAD."""


class Answer(NamedTuple):
    """What primer_cache_read (or primer_cache_warm_lease) said: kind is "hit" (payload: the
    value), "lease" (payload: the token) or "busy" (payload: milliseconds left, as bytes)."""

    kind: str
    payload: bytes

    @property
    def token(self) -> str | None:
        return self.payload.decode() if self.kind == "lease" else None

    @property
    def ms_left(self) -> int:
        return int(self.payload) if self.kind == "busy" else 0


def _nodes(client: redis.Redis) -> list[redis.Redis]:
    get_primaries = getattr(client, "get_primaries", None)
    if get_primaries is None:
        return [client]
    return [client.get_redis_connection(node) for node in get_primaries()]  # type: ignore[attr-defined]


def _version(node: redis.Redis) -> tuple[int, ...]:
    text = str(node.info("server").get("redis_version", "0"))
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def version_problem(where: str, version: tuple[int, ...]) -> str | None:
    """Why a Redis of `version` cannot hold the library, or None when it can."""
    if version >= MIN_VERSION:
        return None
    return (
        f"Redis at {where} is version {'.'.join(map(str, version))}: the primer_cache lease "
        f"functions need Redis {'.'.join(map(str, MIN_VERSION))} or later (FUNCTION LOAD)"
    )


def load_library(client: redis.Redis) -> None:
    """FUNCTION LOAD REPLACE the library on every primary; LeaseLibraryError naming the server
    and its version when it has no functions."""
    for node in _nodes(client):
        where = node.connection_pool.connection_kwargs
        problem = version_problem(
            f"{where.get('host', '?')}:{where.get('port', '?')}", _version(node)
        )
        if problem:
            raise LeaseLibraryError(problem)
        try:
            node.function_load(LIBRARY, replace=True)
        except redis.ResponseError as exc:
            raise LeaseLibraryError(
                f"FUNCTION LOAD of the primer_cache library failed: {exc}"
            ) from exc
    log.info("loaded the primer_cache function library")


def _fcall(client: redis.Redis, name: str, key: str | bytes, *args: Any) -> Any:
    try:
        return client.fcall(name, 1, key, *args)
    except redis.ResponseError as exc:
        if "Function not found" not in str(exc):
            raise
    log.warning("function %s is not loaded on this Redis: loading the library again", name)
    load_library(client)
    return client.fcall(name, 1, key, *args)


def read(client: redis.Redis, key: str | bytes, lease_ms: int) -> Answer:
    """primer_cache_read: the primer server's read (here for tests, benches and the README)."""
    kind, payload = _fcall(client, READ, key, lease_ms)
    return Answer(_text(kind), _bytes(payload))


def warm_lease(client: redis.Redis, key: str | bytes, lease_ms: int) -> str | None:
    """A lease for the sidecar's own write of `key`, granted even when the key is present or
    another lease is out (it takes that over); None when the key cannot have a lease."""
    kind, payload = _fcall(client, WARM_LEASE, key, lease_ms)
    return _bytes(payload).decode() if _text(kind) == "lease" else None


def fill(client: redis.Redis, key: str | bytes, token: str, value: bytes, ttl_s: int) -> bool:
    """primer_cache_fill: write `value` only while the lease `token` still stands."""
    return bool(_fcall(client, FILL, key, token, value, ttl_s))


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _bytes(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    return str(raw).encode()
