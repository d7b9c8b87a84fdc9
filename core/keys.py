"""The cache key format, as the sidecar reads it: filters and judging on top of the wire format.

The format itself (building keys, the seed's `generate_cache_key` under the prefix, lease key
names, hash tags, SCAN patterns) belongs to the primer server's client library,
`primer_cache_client.keys`, and is imported from there: one copy, shared with the primer
server. What stays here is the sidecar's own use of a key: its filter (which elements a
cached response can contain), the query it stands for, and a sweep's memoised verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from primer_cache_client.keys import (
    LEASE_PREFIX,
    escape_glob,
    hash_tag,
    lease_key,
    leased_key,
    slot_text,
    tagged,
    untag,
)
from primer_cache_client.keys import KeyFormat as WireKeyFormat

from config.query import Query

__all__ = [
    "LEASE_PREFIX",
    "KeyFilter",
    "KeyFormat",
    "ParsedKey",
    "WireKeyFormat",
    "checkpoint_key",
    "escape_glob",
    "hash_tag",
    "heartbeat_key",
    "leader_key",
    "lease_key",
    "leased_key",
    "slot_text",
    "tagged",
    "untag",
]


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """The part of a query that decides which elements a cached response can contain."""

    cats: str  # "_".join(sorted(categories)); "" means every category
    threshold: Decimal
    level: str  # a level, or "all"

    @classmethod
    def of(cls, query: Query) -> KeyFilter:
        return cls(
            cats="_".join(query.categories),
            threshold=Decimal(repr(query.priority_threshold)),
            level=query.enforcement_level,
        )


@dataclass(frozen=True, slots=True)
class ParsedKey:
    filter: KeyFilter
    threshold_text: str
    sort_by: str
    limit: int

    def query(self) -> Query:
        """The query that builds this key (exact when no category contains `_`)."""
        cats = tuple(self.filter.cats.split("_")) if self.filter.cats else ()
        return Query(
            categories=cats,
            priority_threshold=float(self.threshold_text),
            enforcement_level=self.filter.level,
            sort_by=self.sort_by,
            limit=self.limit,
        )


class KeyFormat(WireKeyFormat):
    """The client's key format (build, fields, patterns, classify) plus the sidecar's
    reading of a key: its filter and query, and a sweep's memoised verdicts."""

    def parse(self, key: str) -> ParsedKey | None:
        """The key's query parameters, or None when the key is not one this format builds."""
        fields = self.fields(key)
        if fields is None:
            return None
        key_filter = self.filter_of(
            (fields["cats"], fields["priority_threshold"], fields["enforcement_level"])
        )
        if key_filter is None:
            return None
        return ParsedKey(
            filter=key_filter,
            threshold_text=fields["priority_threshold"],
            sort_by=fields["sort_by"],
            limit=int(fields["limit"]),
        )

    @staticmethod
    def filter_of(fields: tuple[str, str, str]) -> KeyFilter | None:
        """The filter for `filter_fields` text; None when the threshold is not a finite number."""
        cats, thr_text, level = fields
        try:
            if not math.isfinite(float(thr_text)):
                return None
            threshold = Decimal(thr_text)
        except (ValueError, InvalidOperation):
            return None
        return KeyFilter(cats=cats, threshold=threshold, level=level)

    def judge(self, doomed: Callable[[KeyFilter], bool]) -> Callable[[str], bool | None]:
        """A sweep's verdict on each key: None when it does not parse, else doomed(filter).

        Memoised: many keys share a filter and differ only in sort and limit. Where the
        template ends in `{sort_by}<c>{limit}` (the seed's does), the text before those two
        determines the filter and is found with one rsplit instead of the regex.
        """
        by_fields: dict[tuple[str, str, str], bool | None] = {}

        def by_regex(key: str) -> bool | None:
            fields = self.filter_fields(key)
            if fields is None:
                return None
            if fields not in by_fields:
                key_filter = self.filter_of(fields)
                by_fields[fields] = None if key_filter is None else doomed(key_filter)
            return by_fields[fields]

        sep = self.tail_separator
        if sep is None:
            return by_regex
        by_front: dict[str, bool | None] = {}

        def by_front_text(key: str) -> bool | None:
            parts = key.rsplit(sep, 2)
            if len(parts) != 3 or not parts[2].isdigit():
                return by_regex(key)
            front = parts[0]
            if front not in by_front:
                by_front[front] = by_regex(key)
            return by_front[front]

        return by_front_text


# ---- the listener's own state keys ------------------------------------------------------------
# The leader lock and the checkpoint it fences are read and written by one script, so on a
# Redis Cluster they must share a hash slot: both carry the hash tag {listener}.
LISTENER_TAG = "{listener}"


def leader_key(state_prefix: str) -> str:
    return f"{state_prefix}{LISTENER_TAG}:leader"


def leader_connection_key(state_prefix: str) -> str:
    """The leader's token and the id of its renewing connection: a standby that finds that
    connection gone takes over without waiting out the lock (worker.leader)."""
    return f"{state_prefix}{LISTENER_TAG}:leader-connection"


def checkpoint_key(state_prefix: str) -> str:
    return f"{state_prefix}{LISTENER_TAG}:checkpoint"


def heartbeat_key(state_prefix: str) -> str:
    """The leader's lag for `primer-cache status` (adapters.redis.heartbeat)."""
    return f"{state_prefix}{LISTENER_TAG}:heartbeat"
