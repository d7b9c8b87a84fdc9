"""Delete given cache keys and revoke their leases in one pipeline: the listener's fast lane
(worker.fast_lane) deletes the known names a change affects this way, as soon as it reads the
change. (The sweep's own deletes, with its heat probe, are tasks.sweep's.)

Lease keys go first, as in a sweep: a fill between the two UNLINKs is refused, one before is
deleted after. With `probe`, each cache key's OBJECT IDLETIME and OBJECT FREQ are read in the
same pipeline just before the UNLINKs (whichever the eviction policy allows answers, the
other errs): the invalidate task picks the answer its refresh probe uses, so keys deleted
here are still refreshed when hot. On a Redis Cluster every UNLINK holds keys of one slot
(a cache key and its lease key share one).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import redis
from redis.crc import key_slot

from adapters.redis_client import is_cluster
from core.keys import lease_key

UNLINK_BATCH = 500
PROBES = ("IDLETIME", "FREQ")


@dataclass
class Unlinked:
    deleted: int = 0
    leases_revoked: int = 0
    # (key, OBJECT subcommand, answer) of each deleted key, when probed
    probes: list[tuple[str, str, int]] = field(default_factory=list)


def unlink_with_leases(client: redis.Redis, cache_keys: list[bytes], *, probe: bool) -> Unlinked:
    out = Unlinked()
    if not cache_keys:
        return out
    leases = [
        lease.encode("utf-8", "surrogateescape")
        for raw in cache_keys
        if (lease := lease_key(raw.decode("utf-8", "surrogateescape"))) is not None
    ]
    pipe = client.pipeline(transaction=False)
    if probe:
        for raw in cache_keys:
            for command in PROBES:
                pipe.execute_command("OBJECT", command, raw)
    lease_groups = _groups(leases, by_slot=is_cluster(client))
    for group in [*lease_groups, *_groups(cache_keys, by_slot=is_cluster(client))]:
        pipe.execute_command("UNLINK", *group)
    replies = pipe.execute(raise_on_error=False)
    if probe:
        answers, replies = replies[: 2 * len(cache_keys)], replies[2 * len(cache_keys) :]
        for index, raw in enumerate(cache_keys):
            try:
                key = raw.decode("utf-8")  # the probes travel in JSON: text keys only
            except UnicodeDecodeError:
                continue
            for offset, command in enumerate(PROBES):
                answer = answers[2 * index + offset]
                if isinstance(answer, int):
                    out.probes.append((key, command, answer))
    for position, reply in enumerate(replies):
        if isinstance(reply, Exception):
            raise reply
        if position < len(lease_groups):
            out.leases_revoked += int(reply)
        else:
            out.deleted += int(reply)
    return out


def _groups(names: list[bytes], *, by_slot: bool) -> list[list[bytes]]:
    """UNLINK argument lists of at most UNLINK_BATCH keys; on a cluster, one slot each."""
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
