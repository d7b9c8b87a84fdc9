"""`primer-cache listen`: run the binlog listener in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import redis

from adapters.mysql.replicas import ReplicaError
from adapters.redis.leases import LeaseLibraryError, load_library
from config import Settings, load_settings


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "listen", help="tail the binlog and publish invalidations (Procfile: listener)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    # Deferred: the binlog reader is for this command alone (cli/__init__.py).
    from worker.listener import Listener
    from worker.metrics import serve
    from worker.server_check import ServerSettingsError

    # A loop that has not turned for three lock TTLs (at least 30 s) is stuck or reconnecting.
    stall_s = max(30.0, 3 * settings.listener.leader_ttl_ms / 1000)
    serve(settings.listener.metrics_port, settings.status.max_lag_s, stall_s, settings.metrics.addr)
    listener = Listener(settings)
    listener.install_signal_handlers()
    _warn_if_broker_evicts(settings)
    if not _load_lease_library(listener):
        return 2
    try:
        listener.run()
    except (ServerSettingsError, ReplicaError) as exc:
        print(f"primer-cache listen: {exc}", file=sys.stderr)
        return 2
    return 0


def _load_lease_library(listener: Any) -> bool:
    """The primer server's fills and the warms need the lease functions: load them (the
    worker does too); False, with the reason on stderr, on a Redis without functions."""
    try:
        load_library(listener.redis)
    except LeaseLibraryError as exc:
        print(f"primer-cache listen: {exc}", file=sys.stderr)
        return False
    except redis.RedisError as exc:  # Redis away: the workers load it once it is back
        logging.getLogger("primer_cache").warning("could not load the lease functions: %s", exc)
    return True


def _warn_if_broker_evicts(settings: Settings) -> None:
    # Deferred: Celery's import cost, which only `listen` pays (cli/__init__.py).
    from adapters.broker import broker_eviction_warning

    warning = broker_eviction_warning(settings)
    if warning:
        logging.getLogger("primer_cache").warning(warning)
