"""`primer-cache status [--json]`: leader, lag, checkpoint, queue depths, warm keys present,
partition headroom; exit status 1 when unhealthy, with every reason.

Unhealthy means any of:
- no listener holds the leader lock: the lock lapses `listener.leader_ttl_ms` after the
  leader's last renewal, so an absent lock is a leader gone for longer than the TTL;
- the leader's lag (its heartbeat, adapters/redis/heartbeat.py) is above `status.max_lag_s`, or it
  has written no heartbeat for three lock TTLs (at least 10 s);
- a configured warm key is missing from the cache (for WARM_GRACE_S: a re-warm follows
  each invalidation of one within milliseconds);
- the managed analytics table has less than one month of partitions ahead of the current
  one (or they cannot be read);
- the listener met binlog events it could not read (it flushed and stepped past each one:
  adapters/redis/undecodable.py) that no operator has acknowledged with
  `primer-cache ack-undecodable`;
- a server cannot be reached (docs/failures.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import pymysql
from kombu.exceptions import ChannelError

from adapters import unreachable
from adapters.redis import heartbeat, undecodable
from adapters.redis.connection import connect_redis
from adapters.redis.stats import stats_key
from config import Settings, load_settings
from core.keys import KeyFormat, checkpoint_key, leader_key
from core.partition_plan import PartitionError, headroom_months, understand

WARM_GRACE_S = 2.0  # how long a warm key may be absent (deleted, re-warm on its way)


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "status", help="how the sidecar is doing; exit 1 when unhealthy"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def collect(settings: Settings | None = None) -> dict[str, Any]:
    """What `status` shows. A server that cannot be reached is a problem in the answer (its
    parts stay empty), never an exception: monitoring parses the JSON whatever is down."""
    # Deferred: Celery's import cost (cli/__init__.py).
    from adapters.broker import queues

    settings = settings or load_settings()
    info: dict[str, Any] = {
        "unreachable": [],  # one line per server that failed us
        "cache_read": False,
        "leader": None,
        "lag_seconds": None,
        "heartbeat_age_seconds": None,
        "max_lag_seconds": settings.status.max_lag_s,
        "checkpoint": None,
        "seconds_since_last_event": None,
        "seconds_since_checkpoint": None,
        "queues": {},
        "warm_keys": {},
        "warm_keys_present": 0,
        "stats": {},
        "undecodable_events": None,
    }
    try:
        info.update(_from_cache(settings))
        info["cache_read"] = True
    except Exception as exc:
        info["unreachable"].append(_unreachable(exc, settings))
    try:
        info["queues"] = queue_depths(settings, queues(settings))
    except Exception as exc:
        info["unreachable"].append(_unreachable(exc, settings))
    info["partitions"] = _partitions(settings)
    problems = health_problems(info, settings.listener.leader_ttl_ms)
    return {"healthy": not problems, "problems": problems, **info}


def _unreachable(exc: Exception, settings: Settings) -> str:
    """The one line for a server that failed us; any other error is a bug and propagates."""
    line = unreachable.describe(exc, settings)
    if line is None:
        raise exc
    return line


def _from_cache(settings: Settings) -> dict[str, Any]:
    """The parts of the status the cache Redis holds."""
    cache = connect_redis(settings.cache.url, socket_connect_timeout=5, socket_timeout=10)
    prefix = settings.cache.state_prefix
    raw = cache.get(checkpoint_key(prefix))
    checkpoint = json.loads(raw) if raw else None
    now = time.time()
    keys = KeyFormat(settings.cache.key_prefix, settings.cache.key_template)
    warm = _warm_keys(cache, [keys.build(q) for q in settings.warm.patterns])
    leader = cache.get(leader_key(prefix))
    beat = heartbeat.read(cache, prefix)
    event_time = (checkpoint or {}).get("event_time") or 0
    saved_at = (checkpoint or {}).get("saved_at")
    return {
        "leader": leader.decode() if isinstance(leader, bytes) else leader,
        "lag_seconds": round(beat.lag_now(now), 3) if beat else None,
        "heartbeat_age_seconds": round(now - beat.at, 3) if beat else None,
        "checkpoint": checkpoint,
        "seconds_since_last_event": round(now - event_time, 3) if event_time else None,
        "seconds_since_checkpoint": round(now - saved_at, 3) if saved_at else None,
        "warm_keys": warm,
        "warm_keys_present": sum(warm.values()),
        "stats": {_text(k): int(v) for k, v in cache.hgetall(stats_key(prefix)).items()},
        "undecodable_events": undecodable.read(cache, prefix),
    }


def health_problems(info: dict[str, Any], leader_ttl_ms: int) -> list[str]:
    """Why the sidecar is unhealthy (empty: healthy), from what `collect` gathered."""
    problems = list(info["unreachable"])
    if info["cache_read"]:  # else the leader and its lag are unknown, not absent
        problems += _leader_problems(info, leader_ttl_ms)
    missing = [key for key, present in info["warm_keys"].items() if not present]
    if missing:
        problems.append(f"{len(missing)} warm key(s) missing: {', '.join(missing)}")
    part = info["partitions"]
    if "error" in part:
        problems.append(f"partitions of {part['table']}: {part['error']}")
    elif part["headroom_months"] < 1:
        problems.append(
            f"partitions of {part['table']}: {part['headroom_months']} month(s) ahead "
            f"(through {part['through'] or 'none'}); run `primer-cache partitions ensure`"
        )
    bad = info.get("undecodable_events")
    if bad:
        problems.append(
            f"{bad['count']} binlog event(s) the listener could not read (each flushed the "
            f"cache and was stepped past), the last at {bad.get('where')}: {bad.get('error')}; "
            "fix the cause, then run `primer-cache ack-undecodable`"
        )
    return problems


def _leader_problems(info: dict[str, Any], leader_ttl_ms: int) -> list[str]:
    problems = []
    if not info["leader"]:
        problems.append(
            f"no listener holds the leader lock: none has renewed it for {leader_ttl_ms} ms "
            "(listener.leader_ttl_ms) or more"
        )
    else:
        age = info["heartbeat_age_seconds"]
        if age is None or age > heartbeat.stale_after_s(leader_ttl_ms):
            problems.append(
                f"leader {info['leader']} wrote no heartbeat "
                + ("at all" if age is None else f"for {age:.1f} s")
                + ": its lag is unknown"
            )
        elif info["lag_seconds"] > info["max_lag_seconds"]:
            problems.append(
                f"binlog lag {info['lag_seconds']:.1f} s is above status.max_lag_s = "
                f"{info['max_lag_seconds']}"
            )
    return problems


def _warm_keys(cache: Any, keys: list[str]) -> dict[str, bool]:
    """Whether each warm key is cached. A sweep deletes a warm key a moment before its re-warm
    writes it back: a key counts as missing only once it stayed absent for WARM_GRACE_S."""
    deadline = time.monotonic() + WARM_GRACE_S
    present = dict.fromkeys(keys, False)
    while True:
        for key in [k for k, there in present.items() if not there]:
            present[key] = bool(cache.exists(key))
        if all(present.values()) or time.monotonic() >= deadline:
            return present
        time.sleep(0.1)


def _partitions(settings: Settings) -> dict[str, Any]:
    """The managed table's partition headroom in months, read from information_schema."""
    # Deferred: importing tasks/ imports Celery and registers the tasks (cli/__init__.py).
    from tasks.partitions import read_partitioning
    from tasks.work.runtime import connect_mysql

    database, table = settings.mysql.database, settings.partitions.table
    name = f"{database}.{table}"
    try:
        conn = connect_mysql(settings)
        try:
            layout = understand(read_partitioning(conn, database, table))
        finally:
            conn.close()
    except (PartitionError, pymysql.Error) as exc:
        return {"table": name, "error": unreachable.describe(exc, settings) or str(exc)}
    through = layout.last_bound - 1 if layout.last_bound else None
    return {
        "table": name,
        "through": str(through) if through else None,
        "headroom_months": headroom_months(through, datetime.now(UTC)),
    }


def queue_depths(settings: Settings, queues: tuple[str, ...]) -> dict[str, int | None]:
    """Messages waiting in each queue, on a Redis broker or RabbitMQ alike (a passive
    declare); None for a queue RabbitMQ does not have (no worker declared it yet). A Redis
    broker keeps a queue as a list, which is gone while empty: its missing queue is 0."""
    # Deferred: Celery's import cost (cli/__init__.py).
    from adapters.broker import celery_app, kombu_broker

    app = celery_app(settings)
    depths: dict[str, int | None] = {}
    url, sentinel = kombu_broker(settings.celery.broker_url)
    options = {**app.conf.broker_transport_options, **sentinel}
    with app.connection_for_read(url=url, transport_options=options) as conn:
        conn.ensure_connection(max_retries=1)
        for name in queues:
            channel = conn.channel()
            try:
                depths[name] = int(channel.queue_declare(name, passive=True).message_count)
            except ChannelError:
                # RabbitMQ closes the channel on a missing queue; kombu's Redis transport
                # refuses a passive declare of an empty one (no list), which is 0 messages
                depths[name] = 0 if conn.transport.driver_type == "redis" else None
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depths


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0 if info["healthy"] else 1
    cp = info["checkpoint"] or {}
    print(f"health:      {'healthy' if info['healthy'] else 'UNHEALTHY'}")
    for problem in info["problems"]:
        print(f"  - {problem}")
    print(f"leader:      {info['leader'] or '(none)'}")
    lag = info["lag_seconds"]
    print(f"lag:         {'unknown' if lag is None else f'{lag} s'}")
    print(f"checkpoint:  {cp.get('gtid') or cp.get('file', '(none)')}")
    since = info["seconds_since_last_event"]
    print(f"last event:  {'none since the checkpoint' if since is None else f'{since} s ago'}")
    for name, depth in (info["queues"] or {}).items():
        print(f"queue {name}: {'(not declared)' if depth is None else depth}")
    print(f"warm keys:   {info['warm_keys_present']}/{len(info['warm_keys'])} present")
    stats = info["stats"]
    print(f"redelivered: {stats.get('redeliveries', 0)} batches (not done in time)")
    print(f"fallbacks:   {stats.get('fallback_flushes', 0)} flushes (batches that failed)")
    print(
        f"unparseable: {stats.get('keys_unparseable', 0)} keys under the primer keys' head "
        "did not parse and were deleted (the worker log names them)"
    )
    part = info["partitions"]
    if "error" in part:
        print(f"partitions:  {part['table']}: {part['error']}")
    else:
        ahead = part["headroom_months"]
        print(f"partitions:  {part['table']} through {part['through']} ({ahead} months ahead)")
    return 0 if info["healthy"] else 1


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
