"""Delete given cache keys and revoke their leases in one round trip: the listener's fast lane
(worker.fast_lane) deletes the known names a change affects this way, as soon as it reads the
change. (The sweep's own deletes are tasks.sweep's.)

Without `hold`, lease keys are UNLINKed first, then the cache keys, as a sweep without refresh
does: a fill between the two UNLINKs is refused, one before is deleted after. With `hold`
(refresh on), the deletes go through primer_cache_invalidate as the sweep's do: each key is
deleted and its lease revoked in one atomic step that takes the lease on the hot ones (read
lately, or a lease stood), so readers are told `busy` until the refresh fills them: the
batch's sweep finds each held lease (a lease that stood) and takes it over for its refresh,
or releases it. On a Redis Cluster every call holds keys of one slot (a cache key and
its lease key share one).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import redis
from redis.crc import key_slot

from adapters import leases
from adapters.redis_client import is_cluster
from core.keys import lease_key

UNLINK_BATCH = 500


class Hold(NamedTuple):
    """primer_cache_invalidate's arguments: OBJECT `probe` ("IDLETIME" or "FREQ"), the `bound`
    that makes a key hot, and how long its lease is held for the refresh (`hold_ms`)."""

    probe: str
    bound: int
    hold_ms: int


@dataclass
class Unlinked:
    deleted: int = 0
    leases_revoked: int = 0
    # (key, OBJECT answer (-1: absent), token) of each hot key whose lease is now held
    held: list[tuple[str, int, str]] = field(default_factory=list)


def unlink_with_leases(
    client: redis.Redis, cache_keys: list[bytes], *, hold: Hold | None = None
) -> Unlinked:
    out = Unlinked()
    if not cache_keys:
        return out
    by_slot = is_cluster(client)
    if hold is not None:
        done = leases.invalidate(
            client, _groups(cache_keys, by_slot=by_slot), hold.probe, hold.bound, hold.hold_ms
        )
        for raw, invalidated in done:
            out.deleted += invalidated.deleted
            out.leases_revoked += invalidated.revoked
            if invalidated.token:
                key = raw.decode("utf-8", "surrogateescape")
                out.held.append((key, invalidated.answer, invalidated.token))
        return out
    lease_names = [
        lease.encode("utf-8", "surrogateescape")
        for raw in cache_keys
        if (lease := lease_key(raw.decode("utf-8", "surrogateescape"))) is not None
    ]
    pipe = client.pipeline(transaction=False)
    lease_groups = _groups(lease_names, by_slot=by_slot)
    for group in [*lease_groups, *_groups(cache_keys, by_slot=by_slot)]:
        pipe.execute_command("UNLINK", *group)
    for position, reply in enumerate(pipe.execute(raise_on_error=False)):
        if isinstance(reply, Exception):
            raise reply
        if position < len(lease_groups):
            out.leases_revoked += int(reply)
        else:
            out.deleted += int(reply)
    return out


def lfu_policy(client: redis.Redis) -> bool:
    """Whether the Redis evicts by LFU (then OBJECT FREQ tells a hot key, else IDLETIME);
    a Redis that refuses CONFIG GET is taken for LRU-style, as tasks.refresh does."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.ResponseError:
        policy = ""
    return "lfu" in str(policy)


def _groups(names: list[bytes], *, by_slot: bool) -> list[list[bytes]]:
    """Argument lists of at most UNLINK_BATCH keys; on a cluster, one slot each."""
    if not by_slot:
        return [names[i : i + UNLINK_BATCH] for i in range(0, len(names), UNLINK_BATCH)]
    slots: dict[int, list[bytes]] = defaultdict(list)
    for raw in names:
        slots[key_slot(raw)].append(raw)
    return [
        group[i : i + UNLINK_BATCH]
        for group in slots.values()
        for i in range(0, len(group), UNLINK_BATCH)
    ]
