"""The Redis leader lock and the checkpoint it fences.

One listener replica holds the lock (SET NX PX) and renews it; the checkpoint is written by a
script that first checks the lock is still ours, so a replica that lost the lock can never
write another checkpoint. Acquiring is one script too: a free lock is taken (SET NX), and a
lock that still holds our own token is renewed and kept (a listener whose stream broke
streams again at once instead of waiting out its own lock, issue 22 item 7); a lock another
replica holds is never touched, so the fencing stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
import uuid
from typing import Any

import redis

from core.keys import checkpoint_key, leader_key

log = logging.getLogger(__name__)

# 1: taken (it was free); 2: still ours, renewed; 0: another replica's.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_FENCED_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
_FENCED_DEL = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeadershipLost(Exception):
    """Raised when this replica finds the leader lock is no longer its own."""


class Leadership:
    def __init__(self, client: redis.Redis, state_prefix: str, ttl_ms: int) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        # one hash tag: the fencing scripts touch both keys (one slot on a cluster)
        self.lock_key = leader_key(state_prefix)
        self.checkpoint_key = checkpoint_key(state_prefix)
        self.token = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._fenced_set = client.register_script(_FENCED_SET)
        self._fenced_del = client.register_script(_FENCED_DEL)
        self._release = client.register_script(_RELEASE)
        self.renewed_at = 0.0

    @property
    def renew_interval(self) -> float:
        return self.ttl_ms / 3000.0

    def try_acquire(self) -> bool:
        """Take the lock if it is free, or keep it if it is still ours."""
        taken = self._acquire(keys=[self.lock_key], args=[self.token, self.ttl_ms])
        if not taken:
            return False
        self.renewed_at = time.monotonic()
        log.info(
            "listener %s %s (lock %r)",
            self.token,
            "is the leader" if taken == 1 else "still holds the lead",
            self.lock_key,
        )
        return True

    def holder(self) -> str | None:
        value = self.client.get(self.lock_key)
        return value.decode() if isinstance(value, bytes) else value

    def renew(self) -> None:
        if not self._renew(keys=[self.lock_key], args=[self.token, self.ttl_ms]):
            raise LeadershipLost(f"listener {self.token} lost the leader lock {self.lock_key!r}")
        self.renewed_at = time.monotonic()

    def renew_if_due(self) -> None:
        if time.monotonic() - self.renewed_at >= self.renew_interval:
            self.renew()

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._release(keys=[self.lock_key], args=[self.token])

    def load_checkpoint(self) -> dict[str, Any] | None:
        raw = self.client.get(self.checkpoint_key)
        return json.loads(raw) if raw else None

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self._fenced_set(
            keys=[self.lock_key, self.checkpoint_key], args=[self.token, json.dumps(checkpoint)]
        ):
            raise LeadershipLost(f"listener {self.token} lost the leader lock before a checkpoint")

    def clear_checkpoint(self) -> None:
        if not self._fenced_del(keys=[self.lock_key, self.checkpoint_key], args=[self.token]):
            raise LeadershipLost(f"listener {self.token} lost the leader lock")
