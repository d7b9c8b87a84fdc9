"""`primer-cache status [--json]`: leader, checkpoint, lag, queue depths, warm keys present."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from config import load_settings


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("status", help="how the sidecar is doing")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def collect() -> dict[str, Any]:
    from adapters.redis_client import connect_redis
    from core.keys import KeyFormat, checkpoint_key, leader_key
    from tasks.app import QUEUES
    from tasks.metrics import stats_key

    settings = load_settings()
    cache = connect_redis(settings.redis_url, socket_connect_timeout=5)
    broker = connect_redis(settings.broker_url, socket_connect_timeout=5)
    prefix = settings.state_prefix
    raw = cache.get(checkpoint_key(prefix))
    checkpoint = json.loads(raw) if raw else None
    now = time.time()
    keys = KeyFormat(settings.key_prefix, settings.key_template)
    warm = {keys.build(q): bool(cache.exists(keys.build(q))) for q in settings.warm_patterns}
    leader = cache.get(leader_key(prefix))
    event_time = (checkpoint or {}).get("event_time") or 0
    saved_at = (checkpoint or {}).get("saved_at")
    return {
        "leader": leader.decode() if isinstance(leader, bytes) else leader,
        "checkpoint": checkpoint,
        "seconds_since_last_event": round(now - event_time, 3) if event_time else None,
        "seconds_since_checkpoint": round(now - saved_at, 3) if saved_at else None,
        "queues": {name: int(broker.llen(name)) for name in QUEUES},
        "warm_keys": warm,
        "warm_keys_present": sum(warm.values()),
        "stats": {_text(k): int(v) for k, v in cache.hgetall(stats_key(prefix)).items()},
    }


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    cp = info["checkpoint"] or {}
    print(f"leader:      {info['leader'] or '(none)'}")
    print(f"checkpoint:  {cp.get('gtid') or cp.get('file', '(none)')}")
    since = info["seconds_since_last_event"]
    print(f"last event:  {'none since the checkpoint' if since is None else f'{since} s ago'}")
    for name, depth in info["queues"].items():
        print(f"queue {name}: {depth}")
    print(f"warm keys:   {info['warm_keys_present']}/{len(info['warm_keys'])} present")
    return 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
