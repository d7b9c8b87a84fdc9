"""Race-free warming of primer keys, and the hooks the invalidate task calls.

The stale-set race: a warm SELECTs before a commit and writes after that commit's
invalidation deleted the key, so the old answer would live until its TTL. The guard is the
primer server's own (adapters.redis.leases): a warm takes a lease on its key before its SELECT
(primer_cache_warm_lease, granted even when the key is present) and writes through
primer_cache_fill, which refuses once an invalidation that affects the key has revoked the
lease; the warm then aborts and runs again. One mechanism for every writer of the cache.

Duplicate requests for one key collapse: a lock per key admits one warm; a request that
finds it held marks the key "pending" and returns "collapsed", and the holder runs once more
when it finds the mark at the end, so the request is served by a run that began after it was
made. Lock and mark are hash-tagged on the key (core.keys.tagged), in its slot.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from kombu.exceptions import OperationalError as BrokerError

from adapters.broker import WARM, WARM_TASK, queue_name
from adapters.mysql.primer_query import fetch_rows
from adapters.redis import leases
from config import Settings
from config.query import Query
from core.keys import KeyFilter, tagged
from core.predicate import ChangeIndex
from core.response import build_response, encode
from tasks.work import metrics
from tasks.work.runtime import Runtime

log = logging.getLogger(__name__)

LOCK_MS = 60_000  # the per-key lock: a crashed warm blocks its key's warms at most this long
# The fill lease of one attempt; a warm slower than this aborts. It also bounds how long the
# primer server's readers of the key are told `busy` if the worker dies mid-warm (the seed's
# slowest warm target is 5 s).
LEASE_MS = 60_000
IN_PROCESS_ATTEMPTS = 3  # immediate re-runs after an abort before handing over to Celery
MAX_RUNS = 20  # bound on the runs of one warm (aborts plus pending re-runs)


# KEYS: lock, pending  ARGV: token, lock_ms
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 0
"""
# One attempt begins: renew the lock and serve every pending request (this run starts after
# them). KEYS: lock, pending  ARGV: token, lock_ms
_START = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
return 0
"""
# Returns 1 (keep the lock: a request came in meanwhile, run again) or 0 (released).
# KEYS: lock, pending  ARGV: token, lock_ms
_FINISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
  end
  redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS: lock, pending  ARGV: token
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
"""


class UnleasableKey(ValueError):
    """Raised for a key no lease can guard (a `}` before any hash tag): never written."""


@dataclass(frozen=True)
class _StateKeys:
    lock: str
    pending: str

    @classmethod
    def of(cls, state_prefix: str, key: str) -> _StateKeys:
        lock = tagged(f"{state_prefix}warm:lock:", key)
        pending = tagged(f"{state_prefix}warm:pending:", key)
        if lock is None or pending is None:
            raise UnleasableKey(f"key {key!r} cannot carry a lease: not warmed")
        return cls(lock=lock, pending=pending)


# ---- one warm ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarmResult:
    key: str
    rows: int | None
    ms: float
    status: str  # "warmed", "collapsed" (another warm is serving it) or "aborted"

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "rows": self.rows, "ms": round(self.ms, 3), "status": self.status}


def warm_query(
    rt: Runtime,
    query: Query,
    *,
    attempts: int = IN_PROCESS_ATTEMPTS,
    lock_ms: int = LOCK_MS,
    guard: bool = True,
    before_write: Callable[[int], None] | None = None,
) -> WarmResult:
    """Warm one key in this process: run again at once while the guard refuses the write (up
    to `attempts`), and once more for each request that came in while it ran.

    `guard=False` and `before_write` (called with the run number between the SELECT and the
    write) exist for tests that force the race; the Celery task never passes them.
    """
    key = rt.keys.build(query)
    warm = _Warm(rt, query, key, _StateKeys.of(rt.settings.cache.state_prefix, key), lock_ms)
    started = time.perf_counter()
    if not warm.acquire():
        log.info("warm of %s collapsed into the warm in flight", key)
        return WarmResult(key, None, _since(started), "collapsed")
    held = True
    try:
        aborts = 0
        run = 0
        while True:
            run += 1
            rows = warm.run_once(run, guard, before_write)
            if rows is None:
                aborts += 1
                metrics.GUARD_REFUSALS.inc()
                log.info(
                    "warm of %s aborted (run %d): its lease was revoked before the write", key, run
                )
                if aborts < attempts and run < MAX_RUNS:
                    continue
                return WarmResult(key, None, _since(started), "aborted")
            log.info(
                "warmed %s: %d rows (run %d, %.1f ms)",
                key,
                rows,
                run,
                _since(started),
                extra={"key": key, "rows": rows},
            )
            result = WarmResult(key, rows, _since(started), "warmed")
            if not warm.finish():
                held = False  # released by _FINISH
                return result
            if run >= MAX_RUNS:
                return result
            log.info("warm of %s runs again: a request came in while it ran", key)
    finally:
        if held:
            warm.release()


@dataclass
class _Warm:
    """One warm's steps against Redis: the per-key lock, one run (lease, SELECT, guarded
    write), the end of the lock."""

    rt: Runtime
    query: Query
    key: str
    names: _StateKeys
    lock_ms: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def _script(self, source: str, *args: int) -> Any:
        script = self.rt.redis.register_script(source)
        return script(keys=[self.names.lock, self.names.pending], args=[self.token, *args])

    def acquire(self) -> bool:
        """Take the key's lock; False (and the key marked pending) when a warm holds it."""
        return bool(self._script(_ACQUIRE, self.lock_ms))

    def run_once(
        self, run: int, guard: bool, before_write: Callable[[int], None] | None
    ) -> int | None:
        """Lease, SELECT, write through the lease: the rows written, or None when the guard
        refused the write (the key was invalidated meanwhile)."""
        rt, client, key = self.rt, self.rt.redis, self.key
        self._script(_START, self.lock_ms)
        lease = leases.warm_lease(client, key, LEASE_MS)
        rows = fetch_rows(rt.db(), rt.settings, self.query)
        value = encode(
            build_response(self.query, rows, datetime.now(UTC)),
            compression=rt.settings.cache.compression,
        )
        if before_write is not None:
            before_write(run)
        if guard:
            written = lease is not None and leases.fill(
                client, key, lease, value, rt.settings.cache.ttl_seconds
            )
        else:
            written = bool(client.set(key, value, ex=rt.settings.cache.ttl_seconds))
        return len(rows) if written else None

    def finish(self) -> bool:
        """End a run: True (the lock kept) when a request came in meanwhile, so run again."""
        return bool(self._script(_FINISH, self.lock_ms))

    def release(self) -> None:
        try:
            self._script(_RELEASE)
        except redis.RedisError as exc:  # the lock's expiry cleans up after us
            log.warning("could not release the warm lock %s: %s", self.names.lock, exc)


# ---- the invalidate task's hooks ----------------------------------------------------------------


def affected_patterns(settings: Settings, index: ChangeIndex | None) -> list[Query]:
    """The configured warm patterns a batch affects (every one for a flush)."""
    return [q for q in settings.warm.patterns if index is None or index.affects(KeyFilter.of(q))]


def after_invalidation(rt: Runtime, index: ChangeIndex | None, *, behind: bool = False) -> None:
    """Re-warm the configured patterns the batch affected (every one after a flush).

    Not for a batch the listener published while behind (a backlog after a stall or a
    restart): a warm per batch would query the database for values the next batch of the
    backlog invalidates again. The listener warms every pattern once instead, when it has
    caught up and its last such batch is done (worker.listener)."""
    if behind:
        return
    for query in affected_patterns(rt.settings, index):
        try:
            rt.send(WARM_TASK, [query.to_params()], WARM)
        except BrokerError as exc:
            # The sweep already made the cache correct; what is lost is warmth, so say so
            # loudly rather than fail (and repeat) the invalidation.
            queue = queue_name(rt.settings, WARM)
            log.error("could not enqueue %s on %s: %s", WARM_TASK, queue, exc)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
