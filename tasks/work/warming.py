"""Race-free warming of primer keys (DESIGN §4), and the hooks the invalidate task calls.

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
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from kombu.exceptions import OperationalError as BrokerError

from adapters.redis import leases
from config import Settings
from config.query import Query
from core.keys import KeyFilter, tagged
from core.predicate import ChangeIndex
from core.response import build_response, encode
from tasks import metrics
from tasks.app import WARM_ALL_TASK, WARM_TASK, app, queue_name, send
from tasks.primer_query import fetch_rows
from tasks.retry import CONNECTION_ERRORS, retry_on
from tasks.runtime import Runtime, runtime

log = logging.getLogger(__name__)

LOCK_MS = 60_000  # the per-key lock: a crashed warm blocks its key's warms at most this long
# The fill lease of one attempt; a warm slower than this aborts. It also bounds how long the
# primer server's readers of the key are told `busy` if the worker dies mid-warm (the seed's
# slowest warm target is 5 s).
LEASE_MS = 60_000
IN_PROCESS_ATTEMPTS = 3  # immediate re-runs after an abort before handing over to Celery
MAX_RUNS = 20  # bound on the runs of one warm (aborts plus pending re-runs)
ABORT_RETRIES = 100  # Celery retries of a warm that kept aborting (generous: writes settle)


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


def warm_query(*args: Any, **kwargs: Any) -> WarmResult:
    """Warm one key in this process (see `_warm_query`), counted in the worker's metrics."""
    result = _warm_query(*args, **kwargs)
    metrics.WARMS.labels(result.status).inc()
    metrics.WARM_SECONDS.observe(result.ms / 1000)
    return result


def _warm_query(
    rt: Runtime,
    query: Query,
    *,
    attempts: int = IN_PROCESS_ATTEMPTS,
    lock_ms: int = LOCK_MS,
    guard: bool = True,
    before_write: Callable[[int], None] | None = None,
) -> WarmResult:
    """Warm one key in this process.

    `guard=False` and `before_write` (called with the run number between the SELECT and the
    write) exist for tests that force the race; the Celery task never passes them.
    """
    key = rt.keys.build(query)
    names = _StateKeys.of(rt.settings.state_prefix, key)
    token = uuid.uuid4().hex
    started = time.perf_counter()
    client = rt.redis
    if not client.register_script(_ACQUIRE)(
        keys=[names.lock, names.pending], args=[token, lock_ms]
    ):
        log.info("warm of %s collapsed into the warm in flight", key)
        return WarmResult(key, None, _since(started), "collapsed")
    held = True
    try:
        aborts = 0
        run = 0
        while True:
            run += 1
            client.register_script(_START)(keys=[names.lock, names.pending], args=[token, lock_ms])
            lease = leases.warm_lease(client, key, LEASE_MS)
            rows = fetch_rows(rt.db(), rt.settings, query)
            value = encode(
                build_response(query, rows, datetime.now(UTC)),
                compression=rt.settings.compression,
            )
            if before_write is not None:
                before_write(run)
            if guard:
                written = lease is not None and leases.fill(
                    client, key, lease, value, rt.settings.ttl_seconds
                )
            else:
                written = bool(client.set(key, value, ex=rt.settings.ttl_seconds))
            if not written:
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
                len(rows),
                run,
                _since(started),
                extra={"key": key, "rows": len(rows)},
            )
            result = WarmResult(key, len(rows), _since(started), "warmed")
            again = client.register_script(_FINISH)(
                keys=[names.lock, names.pending], args=[token, lock_ms]
            )
            if not again:
                held = False  # released by _FINISH
                return result
            if run >= MAX_RUNS:
                return result
            log.info("warm of %s runs again: a request came in while it ran", key)
    finally:
        if held:
            _release(client, names, token)


def _release(client: redis.Redis, names: _StateKeys, token: str) -> None:
    try:
        client.register_script(_RELEASE)(keys=[names.lock, names.pending], args=[token])
    except redis.RedisError as exc:  # the lock's expiry cleans up after us
        log.warning("could not release the warm lock %s: %s", names.lock, exc)


# ---- the invalidate task's hooks ----------------------------------------------------------------


def affected_patterns(settings: Settings, index: ChangeIndex | None) -> list[Query]:
    """The configured warm patterns a batch affects (every one for a flush)."""
    return [q for q in settings.warm_patterns if index is None or index.affects(KeyFilter.of(q))]


def after_invalidation(rt: Runtime, index: ChangeIndex | None, *, behind: bool = False) -> None:
    """Re-warm the configured patterns the batch affected (every one after a flush).

    Not for a batch the listener published while behind (a backlog after a stall or a
    restart): a warm per batch would query the database for values the next batch of the
    backlog invalidates again. The listener warms every pattern once instead, when it has
    caught up and its last such batch is done (worker.listener)."""
    if behind:
        return
    settings = rt.settings
    for query in affected_patterns(settings, index):
        _send(WARM_TASK, [query.to_params()], queue_name(settings, "warm"))


def _send(name: str, args: list[Any], queue: str) -> None:
    try:
        send(name, args, queue)
    except BrokerError as exc:
        # The sweep already made the cache correct; what is lost is warmth, so say so
        # loudly rather than fail (and repeat) the invalidation.
        log.error("could not enqueue %s on %s: %s", name, queue, exc)


# ---- tasks -----------------------------------------------------------------------------------


@app.task(
    bind=True,
    name=WARM_TASK,
    **retry_on(*CONNECTION_ERRORS),
    max_retries=ABORT_RETRIES,
)
def warm(self: Any, params: dict) -> dict:
    """Warm one pattern (seed parameter names). Retries itself while its writes abort."""
    query = Query.from_params(params)
    result = warm_query(runtime(), query)
    if result.status == "aborted":
        if self.request.retries < ABORT_RETRIES:
            raise self.retry(countdown=random.uniform(0.05, 0.5))
        log.error("gave up warming %s after %d retries", result.key, self.request.retries)
    return result.to_json()


@app.task(
    name=WARM_ALL_TASK,
    **retry_on(*CONNECTION_ERRORS, BrokerError),
    max_retries=ABORT_RETRIES,
)
def warm_all() -> list[dict]:
    """Enqueue one warm task per configured pattern (each retries and collapses on its own)."""
    rt = runtime()
    return enqueue_warms(rt, rt.settings.warm_patterns)


def enqueue_warms(rt: Runtime, queries: Iterable[Query]) -> list[dict]:
    """Send one warm task per query; [{"key", "task_id"}] in the same order."""
    sent = []
    for query in queries:
        result = app.send_task(
            WARM_TASK, args=[query.to_params()], queue=queue_name(rt.settings, "warm")
        )
        sent.append({"key": rt.keys.build(query), "task_id": result.id})
    return sent


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
