"""The lease guard in Redis: load the `primer_cache` function library, and call it.

Both the listener and the worker load the library at start (FUNCTION LOAD REPLACE, on every
primary of a cluster); a call that finds it missing (a Redis restarted without persistence)
loads it again and retries once.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import redis

from adapters.redis.lease_library import (
    FILL,
    INVALIDATE,
    LIBRARY,
    READ,
    RELEASE,
    WARM_LEASE,
    Answer,
    parse_answer,
)

log = logging.getLogger(__name__)

MIN_VERSION = (7, 0)


class LeaseLibraryError(Exception):
    """Raised when the function library cannot be loaded: a Redis older than 7.0 (no
    functions), or one that refuses FUNCTION LOAD."""


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
    """FCALL `name` on one key (loading the library again if the Redis lost it)."""
    return _fcall_each(client, name, [([key], list(args))])[0]


def _fcall_each(
    client: redis.Redis, name: str, calls: list[tuple[list[Any], list[Any]]]
) -> list[Any]:
    """FCALL `name` once per (keys, args) in one pipeline, on the node that holds the keys
    (a cluster node's own connection, or a client that routes by key); errors raise."""
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.fcall(name, len(keys), *keys, *args)
        replies = pipe.execute(raise_on_error=False)
        missing = any(
            isinstance(r, redis.ResponseError) and "Function not found" in str(r) for r in replies
        )
        if not missing or attempt == 2:
            break
        log.warning("function %s is not loaded on this Redis: loading the library again", name)
        load_library(client)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def hold(client: redis.Redis, keys: list[str], lease_ms: int) -> dict[str, str]:
    """Take the lease on each of `keys` (as warm_lease does), in one round trip: readers are
    told `busy` until the holder fills or releases it, or it runs out. Returns key -> token
    for the keys that can have a lease."""
    if not keys:
        return {}
    replies = _fcall_each(client, WARM_LEASE, [([key], [lease_ms]) for key in keys])
    tokens = {key: _token(reply) for key, reply in zip(keys, replies, strict=True)}
    return {key: token for key, token in tokens.items() if token is not None}


def release(client: redis.Redis, held: dict[str, str]) -> int:
    """Give back leases taken with hold() that will not be filled; returns how many still
    stood. Readers may then take a lease and fill again."""
    if not held:
        return 0
    return sum(_fcall_each(client, RELEASE, [([key], [token]) for key, token in held.items()]))


class Invalidated(NamedTuple):
    """What primer_cache_invalidate did to one key."""

    deleted: bool
    revoked: bool  # a lease stood on it
    answer: int  # OBJECT IDLETIME or FREQ; -1: the key was absent
    token: str  # the lease now held on a hot key; "" when not hot


def invalidate(
    client: redis.Redis, groups: list[list[bytes]], probe: str, bound: int, hold_ms: int
) -> list[tuple[bytes, Invalidated]]:
    """primer_cache_invalidate on each group of keys (one slot per group on a cluster), in one
    round trip: delete, revoke, and hold the hot ones for their refresh."""
    calls = [(group, [probe, bound, hold_ms]) for group in groups if group]
    out: list[tuple[bytes, Invalidated]] = []
    for (group, _args), reply in zip(calls, _fcall_each(client, INVALIDATE, calls), strict=True):
        for n, key in enumerate(group):
            deleted, stood, answer, token = reply[4 * n : 4 * n + 4]
            out.append((key, Invalidated(bool(deleted), bool(stood), int(answer), _decoded(token))))
    return out


def read(client: redis.Redis, key: str | bytes, lease_ms: int) -> Answer:
    """primer_cache_read: the primer server's read (here for tests, benches and docs/design.md)."""
    return parse_answer(_fcall(client, READ, key, lease_ms))


def warm_lease(client: redis.Redis, key: str | bytes, lease_ms: int) -> str | None:
    """A lease for the sidecar's own write of `key`, granted even when the key is present or
    another lease is out (it takes that over); None when the key cannot have a lease."""
    return _token(_fcall(client, WARM_LEASE, key, lease_ms))


def _token(reply: Any) -> str | None:
    """The token of a warm_lease reply; None for an unleasable key (`busy 0`)."""
    return parse_answer(reply).token


def fill(client: redis.Redis, key: str | bytes, token: str, value: bytes, ttl_s: int) -> bool:
    """primer_cache_fill: write `value` only while the lease `token` still stands."""
    return bool(_fcall(client, FILL, key, token, value, ttl_s))


def _decoded(raw: object) -> str:
    """A reply field as text (redis-py gives bytes, or an int for a number)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)
