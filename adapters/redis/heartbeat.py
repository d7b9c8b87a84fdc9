"""The leading listener's heartbeat in Redis: its lag as it last measured it, for
`primer-cache status`, which runs in another process (or on another machine) and cannot see
the listener's own gauges.

Written about once a second by the leader, with an expiry of a few lock TTLs, so a
heartbeat that is gone or old says the leader stopped looking at its stream.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

from core.keys import heartbeat_key


@dataclass(frozen=True)
class Heartbeat:
    leader: str  # the leader lock's token
    at: float  # epoch s when it was written
    lag_s: float  # the listener's lag then (0: caught up)
    caught_up: bool
    last_commit: float  # binlog commit time of the last transaction taken (epoch s)

    def lag_now(self, now: float) -> float:
        """The lag now: a listener that was behind then is that much further behind unless
        it says otherwise."""
        return self.lag_s if self.caught_up else self.lag_s + max(0.0, now - self.at)


STALE_AFTER_MIN_S = 10.0  # a 1 s lock must not make a busy leader's heartbeat look stale


def stale_after_s(leader_ttl_ms: int) -> float:
    """How old the heartbeat may be before the leader counts as not looking at its stream:
    three lock TTLs, at least STALE_AFTER_MIN_S (it is written about once a second)."""
    return max(STALE_AFTER_MIN_S, 3 * leader_ttl_ms / 1000)


def write(client: redis.Redis, state_prefix: str, beat: Heartbeat, ttl_ms: int) -> None:
    client.set(heartbeat_key(state_prefix), json.dumps(asdict(beat)), px=ttl_ms)


def read(client: redis.Redis, state_prefix: str) -> Heartbeat | None:
    raw = client.get(heartbeat_key(state_prefix))
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Heartbeat(
            leader=str(data["leader"]),
            at=float(data["at"]),
            lag_s=float(data["lag_s"]),
            caught_up=bool(data["caught_up"]),
            last_commit=float(data["last_commit"]),
        )
    except (ValueError, KeyError, TypeError):
        return None  # written by another version: as good as absent
