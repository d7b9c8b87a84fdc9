"""The read replicas the primer server reads from: `PRIMER_REPLICA_URLS` or `[replicas]`.

Invalidation waits until every replica has applied a batch before it sweeps, so a miss served
from a lagging replica cannot refill the cache with the old answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from config.mysql import MySQLSettings

DEFAULT_MAX_WAIT_S = 10.0
MAX_WAIT_CEILING_S = 3600.0
# The keys of the TOML [replicas] table (docs/configuration.md lists them; tests/test_docs.py
# keeps the two in step).
REPLICA_KEYS = ("urls", "max_wait_s")


@dataclass(frozen=True)
class ReplicaSettings:
    urls: tuple[MySQLSettings, ...] = ()
    # How long a batch's first pass waits for the replicas before it sweeps all the same
    # (a replica not there by then gets follow-up passes).
    max_wait_s: float = DEFAULT_MAX_WAIT_S

    def __bool__(self) -> bool:
        return bool(self.urls)


def parse_replicas(
    env: Mapping[str, str], section: Any, primary: MySQLSettings | None, problems: list[str]
) -> ReplicaSettings:
    """ReplicaSettings from the environment (which wins for the URLs) and the TOML
    `[replicas]` table (`section`, or None); every problem is appended to `problems`."""
    values: dict[str, Any] = {}
    urls: list[tuple[str, str]] = []  # (name for messages, URL)
    if section is not None and not isinstance(section, dict):
        problems.append("[replicas] is not a table")
        section = None
    for key, value in (section or {}).items():
        if key not in REPLICA_KEYS:
            problems.append(f"unknown setting replicas.{key}")
        elif key == "urls":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"replicas.urls = {value!r} is not a list of mysql:// URLs")
                continue
            urls = [(f"replicas.urls[{n}]", url) for n, url in enumerate(value)]
        elif key == "max_wait_s":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= MAX_WAIT_CEILING_S
            ):
                problems.append(
                    f"replicas.max_wait_s = {value!r} is not a number of seconds in "
                    f"0..{MAX_WAIT_CEILING_S:g}"
                )
                continue
            values["max_wait_s"] = float(value)
    text = env.get("PRIMER_REPLICA_URLS")
    if text is not None:
        pieces = [piece.strip() for piece in text.split(",")]
        urls = [(f"PRIMER_REPLICA_URLS[{n}]", url) for n, url in enumerate(pieces) if url]
    return ReplicaSettings(urls=_parse_urls(urls, primary, problems), **values)


def _parse_urls(
    urls: list[tuple[str, str]], primary: MySQLSettings | None, problems: list[str]
) -> tuple[MySQLSettings, ...]:
    parsed: list[MySQLSettings] = []
    seen: set[tuple[str, int]] = set()
    for name, url in urls:
        replica = MySQLSettings.from_url(url, problems, name, need_database=False)
        if replica is None:
            continue
        where = (replica.host, replica.port)
        if primary is not None and where == (primary.host, primary.port):
            problems.append(
                f"{name} {replica.url()!r} is the primary itself (PRIMER_MYSQL_URL), "
                "not a read replica"
            )
        elif where in seen:
            problems.append(f"{name} {replica.url()!r} is listed twice")
        else:
            seen.add(where)
            parsed.append(replica)
    return tuple(parsed)
