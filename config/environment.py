"""The settings the environment gives: the servers (database, cache Redis, broker), the file's
path, and what differs per process (server id, metrics ports and address, log format), which
overrides the shared file."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from config.groups import DEFAULT_REDIS_URL
from config.mysql import MySQLSettings, parse_sources
from config.urls import check_broker_url, check_redis_url, default_broker_url

# Variables that may not be set to the empty string (see refuse_empty).
NOT_EMPTY = ("PRIMER_MYSQL_URL", "PRIMER_REDIS_URL", "PRIMER_BROKER_URL", "PRIMER_CONFIG")

# Per-process integers: (variable, group, field, lowest, highest). A metrics port of 0 turns
# that endpoint off (the default); a server id of 0 is none.
PROCESS_INTEGERS = (
    ("PRIMER_SERVER_ID", "listener", "server_id", 1, 2**32 - 1),
    ("PRIMER_METRICS_PORT", "listener", "metrics_port", 0, 65535),
    ("PRIMER_WORKER_METRICS_PORT", "metrics", "worker_port", 0, 65535),
)
LOG_FORMATS = ("text", "json")


def refuse_empty(env: Mapping[str, str], problems: list[str]) -> None:
    # A variable set to the empty string is a mistake (a template that did not expand), not a
    # wish for the default: the default would be another server, silently.
    for name in NOT_EMPTY:
        if name in env and not env[name].strip():
            problems.append(f"{name} is set but empty: give a value, or unset it")


def read_sources(env: Mapping[str, str], problems: list[str]) -> tuple[MySQLSettings, ...]:
    """The database: PRIMER_MYSQL_URL's sources in order, else the primer server's own
    MEGAMIND_DB_* variables; empty when they are bad."""
    url = env.get("PRIMER_MYSQL_URL")
    if url is not None:
        return parse_sources(url, problems) if url.strip() else ()
    primary = MySQLSettings.from_megamind_env(env, problems)
    return () if primary is None else (primary,)


def read_redis_url(env: Mapping[str, str], problems: list[str]) -> str:
    url = env.get("PRIMER_REDIS_URL", DEFAULT_REDIS_URL)
    check_redis_url("PRIMER_REDIS_URL", url, problems)
    return url


def read_broker_url(env: Mapping[str, str], redis_url: str, problems: list[str]) -> str:
    url = env.get("PRIMER_BROKER_URL")
    if url is None:
        return default_broker_url(redis_url, problems)
    check_broker_url(url, problems)
    return url


def read_process_settings(
    env: Mapping[str, str], values: dict[str, Any], problems: list[str]
) -> None:
    """Put the per-process variables into `values` (group -> {field: value}) over the file's."""
    for name, group, attr, low, top in PROCESS_INTEGERS:
        text = env.get(name)
        if text is None:
            continue
        if text.isascii() and text.isdigit() and low <= int(text) <= top:
            values.setdefault(group, {})[attr] = int(text)
        else:
            problems.append(f"{name} {text!r} is not an integer in {low}..{top}")
    log_format = env.get("PRIMER_LOG_FORMAT")
    if log_format is not None and log_format.strip().lower() not in LOG_FORMATS:
        problems.append(f"PRIMER_LOG_FORMAT {log_format!r} is not text or json")
    addr = env.get("PRIMER_METRICS_ADDR")
    if addr is not None:
        _check_address("PRIMER_METRICS_ADDR", addr, problems)
        values.setdefault("metrics", {})["addr"] = addr


def _check_address(name: str, text: str, problems: list[str]) -> None:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: a NUL in the text
        problems.append(f"{name} {text!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)")
