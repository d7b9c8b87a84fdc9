"""SCAN sweeps of the primer keyspace: find keys with SCAN (never KEYS), delete with UNLINK.

One sweep walks every key under the key format's prefix once and asks `doomed(filter)` of
each key's filter (memoised: many keys share one filter and differ in sort or limit);
deletions go out in pipelined UNLINK batches while the scan goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from core.keys import KeyFilter, KeyFormat

log = logging.getLogger(__name__)

SCAN_COUNT = 1000
UNLINK_BATCH = 500


@dataclass
class SweepResult:
    scanned: int = 0
    deleted: int = 0
    unparseable: int = 0
    keys: list[str] = field(default_factory=list)  # filled on dry runs only

    def to_json(self) -> dict[str, object]:
        return {
            "scanned": self.scanned,
            "deleted": self.deleted,
            "unparseable": self.unparseable,
            **({"keys": self.keys} if self.keys else {}),
        }


def sweep(
    client: redis.Redis,
    keys: KeyFormat,
    doomed: Callable[[KeyFilter], bool],
    *,
    dry_run: bool = False,
    count: int = SCAN_COUNT,
) -> SweepResult:
    """Delete every key under `keys` for which `doomed(filter)` holds, and every key under the
    prefix that does not parse (safe side: it may hold anything). Dry runs only list them."""
    result = SweepResult()
    pending: list[bytes | str] = []
    judge = keys.judge(doomed)
    for node_client in _primaries(client):
        cursor = 0
        while True:
            cursor, batch = node_client.scan(cursor=cursor, match=keys.scan_pattern(), count=count)
            result.scanned += len(batch)
            for raw in batch:
                verdict = judge(_text(raw))
                if verdict is None:
                    result.unparseable += 1
                elif not verdict:
                    continue
                pending.append(raw)
            if len(pending) >= UNLINK_BATCH or (cursor == 0 and pending):
                _delete(node_client, pending, result, dry_run)
                pending = []
            if cursor == 0:
                break
    return result


def _delete(
    client: redis.Redis, batch: list[bytes | str], result: SweepResult, dry_run: bool
) -> None:
    if dry_run:
        result.keys.extend(_text(raw) for raw in batch)
        result.deleted += len(batch)
        return
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(batch), UNLINK_BATCH):
        pipe.unlink(*batch[start : start + UNLINK_BATCH])
    result.deleted += sum(pipe.execute())


def _primaries(client: redis.Redis) -> list[redis.Redis]:
    """Every primary to sweep: the client itself, or each primary of a Redis Cluster."""
    get_primaries = getattr(client, "get_primaries", None)
    if get_primaries is None:
        return [client]
    return [client.get_redis_connection(node) for node in get_primaries()]  # type: ignore[attr-defined]


def _text(raw: bytes | str) -> str:
    # Keys are bytes (no decode_responses, for speed); a non-UTF-8 key must still be handled.
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
