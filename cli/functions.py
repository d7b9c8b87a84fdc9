"""`primer-cache functions load`: (re)load the `primer_cache` Redis function library.

The listener and the worker load it at start; operators run this after a Redis was replaced
or restarted without persistence, or to check that a Redis can hold it (7.0 or later).
"""

from __future__ import annotations

import argparse
from typing import Any

import redis

from adapters.redis.connection import RedisConnectError, connect_redis
from adapters.redis.lease_library import FILL, LIBRARY_NAME, READ
from adapters.redis.leases import LeaseLibraryError, load_library
from cli.errors import OperationError
from config import load_settings
from config.secrets import redact_url


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "functions", help="the primer_cache Redis function library (leases)"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    load = actions.add_parser("load", help="FUNCTION LOAD REPLACE it into the cache Redis")
    load.set_defaults(func=run_load)


def run_load(args: argparse.Namespace) -> int:
    settings = load_settings()
    where = redact_url(settings.cache.url)
    try:
        load_library(connect_redis(settings.cache.url, socket_connect_timeout=5))
    except (LeaseLibraryError, RedisConnectError) as exc:
        raise OperationError(str(exc)) from None
    except redis.RedisError as exc:
        raise OperationError(f"Redis at {where!r}: {exc}") from None
    print(f"loaded function library {LIBRARY_NAME} ({READ}, {FILL}) into {where}")
    return 0
