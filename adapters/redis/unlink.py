"""Delete cache keys and revoke their leases in one round trip: the one way every deleter does
it (the sweep, tasks.sweep; the known names deleted ahead of it, by the listener's fast lane,
worker.fast_lane, and by the task).

Without a `Heat` probe (refresh off), lease keys are UNLINKed first, then the cache keys: a
fill between the two UNLINKs is refused, one before is deleted after. With one (refresh on),
the deletes go through primer_cache_invalidate: each key is deleted and its lease revoked in
one atomic step that takes the lease on the hot ones (read lately, or a lease stood), so
readers are told `busy` from the moment the key is gone until the refresh fills it, with no
gap in which one misses. The batch's sweep finds each lease held this way (a lease that
stood) and takes it over for its refresh, or the invalidation releases it. On a Redis Cluster
every call holds keys of one slot (a cache key and its lease key share one).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import redis
from redis.crc import key_slot

from adapters.redis import leases
from adapters.redis.connection import is_cluster
from config import Settings
from core.keys import lease_key

UNLINK_BATCH = 500
# How long a hot key's lease stays held for its refresh if no refresh comes to fill or release
# it (a worker died): readers are told `busy`, and read the database, meanwhile.
HOLD_MS = 2_000


@dataclass(frozen=True)
class Heat:
    """How to tell a recently read key: OBJECT `command` ("IDLETIME" or "FREQ") and the
    `bound` that makes it hot (idle at most `bound` seconds; or an LFU counter at least
    `bound`)."""

    command: str
    bound: int

    @property
    def hottest(self) -> int:
        """The answer that ranks first: a key whose lease stood, present or not."""
        return 0 if self.command == "IDLETIME" else 255


@dataclass
class Unlinked:
    deleted: int = 0
    leases_revoked: int = 0
    # (key, OBJECT answer, token) of each hot key whose lease is now held; a key that was
    # absent (its lease stood) has Heat.hottest for its answer
    held: list[tuple[str, int, str]] = field(default_factory=list)


def unlink_with_leases(
    client: redis.Redis,
    cache_keys: list[bytes],
    *,
    lease_names: list[bytes] | None = None,
    by_slot: bool | None = None,
    heat: Heat | None = None,
) -> Unlinked:
    """Delete `cache_keys` and revoke their leases. `lease_names`: the lease keys to UNLINK
    (a sweep passes those it found; by default every key's). `by_slot`: group the keys by
    hash slot (by default when `client` is a cluster's; a sweep says so for a node's)."""
    out = Unlinked()
    if not cache_keys:
        return out
    if by_slot is None:
        by_slot = is_cluster(client)
    if heat is not None:
        unique = list(dict.fromkeys(cache_keys))  # a key a sweep found itself and by its lease
        groups = unlink_groups(unique, by_slot=by_slot)
        for raw, done in leases.invalidate(client, groups, heat.command, heat.bound, HOLD_MS):
            out.deleted += done.deleted
            out.leases_revoked += done.revoked
            if done.token:
                key = raw.decode("utf-8", "surrogateescape")
                out.held.append(
                    (key, done.answer if done.answer >= 0 else heat.hottest, done.token)
                )
        return out
    if lease_names is None:
        lease_names = [
            lease.encode("utf-8", "surrogateescape")
            for raw in cache_keys
            if (lease := lease_key(raw.decode("utf-8", "surrogateescape"))) is not None
        ]
    pipe = client.pipeline(transaction=False)
    lease_groups = unlink_groups(lease_names, by_slot=by_slot)
    for group in [*lease_groups, *unlink_groups(cache_keys, by_slot=by_slot)]:
        pipe.execute_command("UNLINK", *group)
    for position, reply in enumerate(pipe.execute(raise_on_error=False)):
        if isinstance(reply, Exception):
            raise reply
        if position < len(lease_groups):
            out.leases_revoked += int(reply)
        else:
            out.deleted += int(reply)
    return out


def heat_of(settings: Settings, lfu: bool) -> Heat | None:
    """The probe that tells a hot key under this eviction policy (`lfu`: an LFU one); None
    when refresh is off (`refresh.max_keys` 0)."""
    if settings.refresh.max_keys <= 0:
        return None
    if lfu:
        return Heat("FREQ", settings.refresh.min_freq)
    return Heat("IDLETIME", settings.refresh.idle_seconds)


def lfu_policy(client: redis.Redis) -> bool:
    """Whether the Redis evicts by LFU (then OBJECT FREQ tells a hot key, else IDLETIME);
    a Redis that refuses CONFIG GET (a managed one) is taken for LRU-style."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.ResponseError:
        policy = ""
    return "lfu" in str(policy)


def unlink_groups(names: list[bytes], *, by_slot: bool) -> list[list[bytes]]:
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
