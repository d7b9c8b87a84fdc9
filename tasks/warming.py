"""Race-free warming of primer keys (DESIGN §4), and the hooks the invalidate task calls.

The stale-set race: a warm SELECTs before a commit and writes after that commit's
invalidation deleted the key, so the old answer would live until its TTL. The guard:

- every warm registers itself in an in-flight registry (a sorted set under the state
  prefix, scored by a lease deadline so a crashed warm does not stay there);
- before a sweep deletes, `before_delete` INCRs a generation for every configured warm
  pattern and every in-flight warm key the change affects (all of them on a flush);
- a warm reads its key's generation before its SELECT and writes with a compare-and-set
  script: SET value EX ttl only if the generation is unchanged (and its registration is
  still live); otherwise it aborts and runs again.

Duplicate requests for one key collapse: a lease lock per key admits one warm; a request
that finds it held marks the key "pending" and returns "collapsed", and the holder runs
once more when it finds the mark at the end, so the request is served by a run that began
after it was made.
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

from config import Settings
from config.query import Query
from core.keys import KeyFilter
from core.predicate import ChangeIndex
from core.response import build_response, encode
from tasks import metrics
from tasks.app import WARM_ALL_TASK, WARM_TASK, app, queue_name
from tasks.primer_query import fetch_rows
from tasks.retry import CONNECTION_ERRORS, retry_on
from tasks.runtime import Runtime, runtime

log = logging.getLogger(__name__)

LEASE_MS = 60_000  # the per-key lock: a crashed warm blocks its key's warms at most this long
INFLIGHT_MS = 600_000  # registry entry lifetime per attempt; a warm slower than this aborts
GENERATION_TTL_S = 7 * 86_400  # refreshed on every bump and read; unused generations go away
IN_PROCESS_ATTEMPTS = 3  # immediate re-runs after an abort before handing over to Celery
MAX_RUNS = 20  # bound on the runs of one warm (aborts plus pending re-runs)
ABORT_RETRIES = 100  # Celery retries of a warm that kept aborting (generous: writes settle)
_TOKEN_LEN = 32  # uuid4().hex: registry members are token + key


# KEYS: lock, pending  ARGV: token, lease_ms
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 0
"""
# One attempt begins: renew the lock, serve every pending request (this run starts after
# them), register in flight, read the generation. Atomic, so no bump can fall in between.
# KEYS: lock, pending, inflight, generation  ARGV: token, lease_ms, member, deadline_ms, gen_ttl
_START = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
local g = redis.call('GET', KEYS[4])
if g then redis.call('EXPIRE', KEYS[4], ARGV[5]) else g = '0' end
return g
"""
# KEYS: generation, value, inflight  ARGV: expected generation, value, ttl_s, member
_COMPARE_AND_SET = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if not redis.call('ZSCORE', KEYS[3], ARGV[4]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1
"""
# Returns 1 (keep the lock: a request came in meanwhile, run again) or 0 (released).
# KEYS: lock, pending, inflight  ARGV: token, member, lease_ms
_FINISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[3], ARGV[2])
return 0
"""
# KEYS: lock, pending, inflight  ARGV: token, member
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[2])
return 0
"""


# ---- state keys -----------------------------------------------------------------------------


def inflight_key(state_prefix: str) -> str:
    return f"{state_prefix}warm:inflight"


def generation_key(state_prefix: str, key: str) -> str:
    return f"{state_prefix}warm:gen:{key}"


@dataclass(frozen=True)
class _StateKeys:
    lock: str
    pending: str
    inflight: str
    generation: str

    @classmethod
    def of(cls, state_prefix: str, key: str) -> _StateKeys:
        return cls(
            lock=f"{state_prefix}warm:lock:{key}",
            pending=f"{state_prefix}warm:pending:{key}",
            inflight=inflight_key(state_prefix),
            generation=generation_key(state_prefix, key),
        )


# ---- one warm ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarmResult:
    key: str
    rows: int | None
    ms: float
    status: str  # "warmed", "collapsed" (another warm is serving it) or "aborted"
    generation: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rows": self.rows,
            "ms": round(self.ms, 3),
            "status": self.status,
            "generation": self.generation,
        }


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
    lease_ms: int = LEASE_MS,
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
    member = token + key
    started = time.perf_counter()
    client = rt.redis
    if not client.register_script(_ACQUIRE)(
        keys=[names.lock, names.pending], args=[token, lease_ms]
    ):
        log.info("warm of %s collapsed into the warm in flight", key)
        return WarmResult(key, None, _since(started), "collapsed")
    held = True
    try:
        aborts = 0
        run = 0
        while True:
            run += 1
            generation = _start_attempt(client, names, token, member, lease_ms)
            rows = fetch_rows(rt.db(), rt.settings, query)
            value = encode(
                build_response(query, rows, datetime.now(UTC)),
                compression=rt.settings.compression,
            )
            if before_write is not None:
                before_write(run)
            if guard:
                written = client.register_script(_COMPARE_AND_SET)(
                    keys=[names.generation, key, names.inflight],
                    args=[generation, value, rt.settings.ttl_seconds, member],
                )
            else:
                written = client.set(key, value, ex=rt.settings.ttl_seconds)
            if not written:
                aborts += 1
                metrics.GUARD_REFUSALS.inc()
                log.info(
                    "warm of %s aborted (run %d): generation %s moved to %s before the write",
                    key,
                    run,
                    generation,
                    _text(client.get(names.generation)) or "0",
                )
                if aborts < attempts and run < MAX_RUNS:
                    continue
                return WarmResult(key, None, _since(started), "aborted", None)
            log.info(
                "warmed %s: %d rows at generation %s (run %d, %.1f ms)",
                key,
                len(rows),
                generation,
                run,
                _since(started),
            )
            result = WarmResult(key, len(rows), _since(started), "warmed", int(generation))
            again = client.register_script(_FINISH)(
                keys=[names.lock, names.pending, names.inflight], args=[token, member, lease_ms]
            )
            if not again:
                held = False  # released by _FINISH
                return result
            if run >= MAX_RUNS:
                return result
            log.info("warm of %s runs again: a request came in while it ran", key)
    finally:
        if held:
            _release(client, names, token, member)


def _start_attempt(
    client: redis.Redis, names: _StateKeys, token: str, member: str, lease_ms: int
) -> str:
    deadline = int(time.time() * 1000) + INFLIGHT_MS
    raw = client.register_script(_START)(
        keys=[names.lock, names.pending, names.inflight, names.generation],
        args=[token, lease_ms, member, deadline, GENERATION_TTL_S],
    )
    return _text(raw) or "0"


def _release(client: redis.Redis, names: _StateKeys, token: str, member: str) -> None:
    try:
        client.register_script(_RELEASE)(
            keys=[names.lock, names.pending, names.inflight], args=[token, member]
        )
    except redis.RedisError as exc:  # the lease and the registry deadline clean up after us
        log.warning("could not release the warm lock of %s: %s", names.lock, exc)


# ---- the invalidate task's hooks ----------------------------------------------------------------


def affected_patterns(settings: Settings, index: ChangeIndex | None) -> list[Query]:
    """The configured warm patterns a batch affects (every one for a flush)."""
    return [q for q in settings.warm_patterns if index is None or index.affects(KeyFilter.of(q))]


def before_delete(rt: Runtime, index: ChangeIndex | None) -> None:
    """Bump the generation of every warm key the batch affects, before the sweep deletes:
    configured patterns, and whatever is in flight (index None: a flush; bump all)."""
    keys = {rt.keys.build(q) for q in affected_patterns(rt.settings, index)}
    keys.update(_inflight_affected(rt, index))
    if not keys:
        return
    prefix = rt.settings.state_prefix
    pipe = rt.redis.pipeline(transaction=False)
    ordered = sorted(keys)
    for key in ordered:
        pipe.incr(generation_key(prefix, key))
        pipe.expire(generation_key(prefix, key), GENERATION_TTL_S)
    replies = pipe.execute()
    for key, generation in zip(ordered, replies[::2], strict=True):
        log.info("bumped warm generation of %s to %d", key, generation)


def _inflight_affected(rt: Runtime, index: ChangeIndex | None) -> set[str]:
    registry = inflight_key(rt.settings.state_prefix)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.zremrangebyscore(registry, "-inf", int(time.time() * 1000) - 1)
    pipe.zrange(registry, 0, -1)
    _, members = pipe.execute()
    keys = set()
    for raw in members:
        key = (_text(raw) or "")[_TOKEN_LEN:]
        parsed = rt.keys.parse(key)
        # A key that does not parse cannot be judged: bump it (safe side).
        if index is None or parsed is None or index.affects(parsed.filter):
            keys.add(key)
    return keys


def after_invalidation(rt: Runtime, index: ChangeIndex | None) -> None:
    """Re-warm the configured patterns the batch affected (every one after a flush)."""
    settings = rt.settings
    for query in affected_patterns(settings, index):
        _send(WARM_TASK, [query.to_params()], queue_name(settings, "warm"))


def _send(name: str, args: list[Any], queue: str) -> None:
    try:
        app.send_task(
            name,
            args=args,
            queue=queue,
            ignore_result=True,  # nobody waits for it: no result subscription per send
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.2},
        )
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


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)
