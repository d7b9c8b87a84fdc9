"""`primer-cache ack-undecodable`: acknowledge the binlog events the listener could not read.

The listener flushes the cache and steps past such an event, and keeps a record of them that
makes `primer-cache status` unhealthy (adapters/redis/undecodable.py): the cause (a column type
neither decoder reads) usually stays and flushes the cache on every write. Once the operator
has dealt with it, this clears the record and `status` is healthy again.
"""

from __future__ import annotations

import argparse
from typing import Any

import redis

from adapters.redis import undecodable
from adapters.redis.connection import connect_redis
from cli.errors import OperationError
from config import load_settings
from config.secrets import redact_url


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "ack-undecodable",
        help="acknowledge the binlog events the listener could not read (status healthy again)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        cache = connect_redis(settings.cache.url, socket_connect_timeout=5)
        cleared = undecodable.acknowledge(cache, settings.cache.state_prefix)
    except redis.RedisError as exc:
        raise OperationError(f"Redis at {redact_url(settings.cache.url)!r}: {exc}") from None
    if cleared is None:
        print("no undecodable binlog events to acknowledge")
    else:
        print(
            f"acknowledged {cleared['count']} undecodable binlog event(s); the last at "
            f"{cleared.get('where')}: {cleared.get('error')}"
        )
    return 0
