"""The Redis leader lock and the checkpoint it fences.

One listener replica holds the lock (SET NX PX) and renews it; the checkpoint is written by a
script that first checks the lock is still ours, so a replica that lost the lock can never
write another checkpoint.

The lock is short (`listener.leader_ttl_ms`, 1 s by default), so that a leader that died is
replaced within about a second (docs/takeover.md). It is renewed every TTL/RENEWALS by a
thread of its own (Renewer) on a connection of its own, not by the listener's loop: a burst of
binlog, a slow publish or a fast-lane delete cannot starve the renewal. The loop reports that
it is alive (`Leadership.alive()`); a loop that stalled for LOOP_STALL_S lets the lock go (a
stuck leader must not hold it for good), and a renewal that finds the lock another's tells the
loop (`Leadership.check()` raises LeadershipLost).

A leader that dies (SIGKILL, a crash) is noticed sooner than its lock's TTL: the renewer
records the id of its connection beside the lock (`leader_connection_key`), and a standby that
finds that connection gone from Redis (`CLIENT LIST ID`: the kernel closed the socket of the
dead process) removes the lock, if it is still the same holder's, and takes it at once. A
leader that is merely stopped or slow keeps its connection, so it keeps the TTL's grace; a
leader whose connection dropped but lives on loses the lead like a false takeover: duplicate
deletes, never a missed one (the checkpoint stays fenced).

Acquiring is one script too: a free lock is taken (SET NX), and a lock that still holds our
own token is renewed and kept (a listener whose stream broke streams again at once instead of
waiting out its own lock, issue 22 item 7); a lock another replica holds is never touched, so
the fencing stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from typing import Any, cast

import redis

from adapters.redis.connection import is_cluster
from core.keys import checkpoint_key, leader_connection_key, leader_key
from core.position import Checkpoint

log = logging.getLogger(__name__)

RENEWALS = 4  # renewals per TTL: a renewal may fail or come late three times in a row
LOOP_STALL_S = 10.0  # a leader whose loop made no progress this long lets its lock go
RETRY_LOG_S = 10.0  # a renewal that fails (Redis away) is logged at most this often

# 1: taken (it was free); 2: still ours, renewed; 0: another replica's.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
return 0
"""
# ARGV[3]: the id of the renewing connection ('' when unknown), kept beside the lock.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[3] ~= '' then
    redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[2])
  end
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# A standby found the holder's connection gone: the lock goes, if it is still that holder's.
_BREAK = """
if redis.call('GET', KEYS[2]) == ARGV[2] and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1], KEYS[2])
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
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
"""


class LeadershipLost(Exception):
    """Raised when this replica finds the leader lock is no longer its own."""


class Leadership:
    def __init__(
        self,
        client: redis.Redis,
        state_prefix: str,
        ttl_ms: int,
        renew_client: redis.Redis | None = None,
    ) -> None:
        """`renew_client`: the renewer thread's own connection (a client is not shared across
        threads here); without one, the loop renews (renew_if_due), as tests of the lock do."""
        self.client = client
        self.renew_client = renew_client
        self.ttl_ms = ttl_ms
        # one hash tag: the fencing scripts touch both keys (one slot on a cluster)
        self.lock_key = leader_key(state_prefix)
        self.checkpoint_key = checkpoint_key(state_prefix)
        self.connection_key = leader_connection_key(state_prefix)
        self.token = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._fenced_set = client.register_script(_FENCED_SET)
        self._fenced_del = client.register_script(_FENCED_DEL)
        self._release = client.register_script(_RELEASE)
        self._break = client.register_script(_BREAK)
        self._probing = True  # CLIENT LIST may be refused (an ACL, renamed commands)
        self.renewed_at = 0.0
        self._renewer: Renewer | None = None

    @property
    def renew_interval(self) -> float:
        return self.ttl_ms / 1000.0 / RENEWALS

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

    @property
    def lock_keys(self) -> list[str]:
        return [self.lock_key, self.connection_key]

    def take_over_from_a_dead_holder(self) -> bool:
        """True when the holder's renewing connection is gone from Redis and its lock was
        removed (try_acquire next); False while it lives, or when that cannot be told."""
        if not self._probing:
            return False
        raw = self.client.get(self.connection_key)
        value = (raw.decode() if isinstance(raw, bytes) else raw) or ""
        holder, _, connection = value.rpartition(" ")
        if not holder or not connection.isdigit():
            return False  # no renewal recorded yet: the TTL decides
        try:
            if connection_alive(self.client, self.lock_key, connection):
                return False
        except redis.ResponseError as exc:
            self._probing = False
            log.warning(
                "listener %s: CLIENT LIST refused (%s): a dead leader is noticed when its "
                "lock runs out only",
                self.token,
                exc,
            )
            return False
        if not self._break(keys=self.lock_keys, args=[holder, value]):
            return False
        log.warning(
            "listener %s: the leader %s's connection to Redis is gone; taking over without "
            "waiting out its lock",
            self.token,
            holder,
        )
        return True

    def renew(self) -> None:
        if not self._renew(keys=self.lock_keys, args=[self.token, self.ttl_ms, ""]):
            raise LeadershipLost(f"listener {self.token} lost the leader lock {self.lock_key!r}")
        self.renewed_at = time.monotonic()

    def renew_if_due(self) -> None:
        if time.monotonic() - self.renewed_at >= self.renew_interval:
            self.renew()

    # ---- renewing from a thread of its own ---------------------------------------------

    def start_renewing(self) -> None:
        """Renew the lock from the renewer thread until stop_renewing() (a term's length)."""
        self.stop_renewing()
        if self.renew_client is None:
            return
        self._renewer = Renewer(self, self.renew_client)
        self._renewer.start()

    def stop_renewing(self) -> None:
        if self._renewer is not None:
            self._renewer.stop()
            self._renewer = None

    def alive(self) -> None:
        """The leader's loop made progress (the renewer keeps renewing while it does)."""
        if self._renewer is not None:
            self._renewer.loop_at = time.monotonic()

    def check(self) -> None:
        """Raise LeadershipLost once the renewer found the lock another's (or gone); without a
        renewer, renew when due."""
        renewer = self._renewer
        if renewer is None:
            self.renew_if_due()
        elif renewer.lost.is_set():
            raise LeadershipLost(f"listener {self.token} lost the leader lock {self.lock_key!r}")

    def release(self) -> None:
        self.stop_renewing()
        with contextlib.suppress(redis.RedisError):
            self._release(keys=self.lock_keys, args=[self.token])

    def load_checkpoint(self) -> Checkpoint | None:
        raw = self.client.get(self.checkpoint_key)
        return Checkpoint.from_json(json.loads(raw)) if raw else None

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        stored = json.dumps(checkpoint.to_json())
        if not self._fenced_set(
            keys=[self.lock_key, self.checkpoint_key], args=[self.token, stored]
        ):
            raise LeadershipLost(f"listener {self.token} lost the leader lock before a checkpoint")

    def clear_checkpoint(self) -> None:
        if not self._fenced_del(keys=[self.lock_key, self.checkpoint_key], args=[self.token]):
            raise LeadershipLost(f"listener {self.token} lost the leader lock")


class Renewer(threading.Thread):
    """Renews a held lock every renew_interval on its own connection, while the leader's loop
    is alive; sets `lost` and ends when the lock is no longer ours."""

    def __init__(self, leadership: Leadership, client: redis.Redis) -> None:
        super().__init__(name="leader-lock", daemon=True)
        self.leadership = leadership
        self.client = client
        self._renew = client.register_script(_RENEW)
        self.lost = threading.Event()
        self.loop_at = time.monotonic()
        self._stopping = threading.Event()
        self._logged_at = float("-inf")

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(5)

    def run(self) -> None:
        # The first renewal at once: it records the connection a standby watches.
        while not self._renew_once():
            if self._stopping.wait(self.leadership.renew_interval):
                return

    def _renew_once(self) -> bool:
        """One renewal; True when the renewer is done (the lock is lost)."""
        lead = self.leadership
        stalled = time.monotonic() - self.loop_at
        if stalled >= LOOP_STALL_S:
            # The loop is stuck: let the lock run out, so that a standby takes over.
            self._log(f"the listener's loop made no progress for {stalled:.0f} s")
            return False
        try:
            # The id of the connection the renewal itself goes out on (the renewer alone
            # uses this client): a standby takes over once it is gone.
            connection = connection_id(self.client, lead.lock_key)
            ours = self._renew(keys=lead.lock_keys, args=[lead.token, lead.ttl_ms, connection])
        except redis.RedisError as exc:
            # Redis away: the lock runs out on its own; the next renewal says whether it
            # is still ours. Meanwhile the checkpoint stays fenced.
            self._log(f"renewing the leader lock failed ({exc})")
            return False
        if not ours:
            self.lost.set()
            return True
        lead.renewed_at = time.monotonic()
        return False

    def _log(self, why: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= RETRY_LOG_S:
            self._logged_at = now
            token = self.leadership.token
            log.warning("listener %s: %s; the leader lock is not renewed", token, why)


# ---- the holder's connection ------------------------------------------------------------------


def _on_key_node(client: redis.Redis, key: str) -> dict[str, Any]:
    """On a cluster, a connection id means something on the node that holds the lock only."""
    if is_cluster(client):
        return {"target_nodes": cast(Any, client).get_node_from_key(key)}
    return {}


def connection_id(client: redis.Redis, key: str) -> str:
    """The id of the connection `client` talks to `key`'s server on ('' when refused)."""
    try:
        return str(int(client.execute_command("CLIENT ID", **_on_key_node(client, key))))
    except redis.ResponseError:
        return ""  # an ACL without CLIENT: the TTL alone decides


def connection_alive(client: redis.Redis, key: str, connection: str) -> bool:
    """Whether `key`'s server still has the client connection `connection`."""
    listed = client.client_list(client_id=[connection], **_on_key_node(client, key))
    return any(str(entry.get("id")) == connection for entry in listed)
