"""The cache key format: the one place that builds, parses and pattern-matches primer keys.

Default keys reproduce the seed's `generate_cache_key` under the L2 prefix, byte for byte:

    megamind:primer:primer:<cats>:<priority_threshold>:<enforcement_level>:<sort_by>:<limit>

`cats` is `"_".join(sorted(categories))`. Categories may themselves contain `_`, so a
parsed key keeps `cats` as the joined text; the predicate (core.predicate) treats every
`_`-aligned run of it as a category the key may list.

Lease keys (the primer server's fill guard, adapters.leases) are named here too: the lease on
cache key K is `primer-cache:lease:{T}K`, T being K's Redis hash tag, so it lives in K's hash
slot (Redis Cluster runs a function on one slot only). The Lua library computes the same name
(adapters/lease_library.py); tests hold the two to one spec.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from config.query import Query
from config.settings import LEASE_PREFIX

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def escape_glob(text: str) -> str:
    """Escape Redis glob metacharacters so `text` matches itself only in SCAN MATCH."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def hash_tag(key: str) -> str | None:
    """The text Redis Cluster hashes for `key` when it is not the whole key: what lies between
    the first `{` and the first `}` after it, if that is not empty (Redis's rule exactly)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def slot_text(key: str) -> str:
    """The part of `key` that decides its hash slot: its hash tag, else the whole key."""
    tag = hash_tag(key)
    return key if tag is None else tag


def tagged(prefix: str, key: str) -> str | None:
    """`prefix{T}key`, a name in `key`'s hash slot (T: `slot_text(key)`), for state that a
    function or script touches together with `key`. None when no such name exists: a key
    without a hash tag whose text holds a `}` (the name's tag would end there), or an empty one.
    `prefix` must hold no `{`."""
    text = slot_text(key)
    if not text or "}" in text:
        return None
    return f"{prefix}{{{text}}}{key}"


def untag(prefix: str, name: str) -> str | None:
    """The key a `tagged(prefix, key)` name was made for; None when `name` is not one."""
    if not name.startswith(prefix) or name[len(prefix) : len(prefix) + 1] != "{":
        return None
    end = name.find("}", len(prefix) + 1)
    if end < 0:
        return None
    key = name[end + 1 :]
    return key if tagged(prefix, key) == name else None


def lease_key(key: str) -> str | None:
    """The lease state of cache key `key`; None: `key` cannot have one (see `tagged`)."""
    return tagged(LEASE_PREFIX, key)


def leased_key(name: str) -> str | None:
    """The cache key a lease key guards; None when `name` is not a lease key."""
    return untag(LEASE_PREFIX, name)


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


class KeyFormat:
    """Builds and parses keys for one (prefix, template) pair from configuration."""

    def __init__(self, prefix: str, template: str) -> None:
        self.prefix = prefix
        self.template = template
        self.head = prefix + template.split("{", 1)[0]
        self._regex = _compile(prefix, template)
        self._tail_sep = _tail_separator(template)

    def filter_text(self, key: str) -> str:
        """The part of `key` that decides its filter, to group keys that share a verdict:
        the key before its sort and limit where the template ends in them (as judge()
        memoises), else the whole key."""
        sep = self._tail_sep
        if sep is not None:
            parts = key.rsplit(sep, 2)
            if len(parts) == 3 and parts[2].isdigit():
                return parts[0]
        return key

    def build(self, query: Query) -> str:
        return self.prefix + self.template.format(
            cats="_".join(query.categories),
            priority_threshold=str(float(query.priority_threshold)),
            enforcement_level=query.enforcement_level,
            sort_by=query.sort_by,
            limit=str(int(query.limit)),
        )

    def parse(self, key: str) -> ParsedKey | None:
        """The key's query parameters, or None when the key is not one this format builds."""
        match = self._regex.fullmatch(key)
        if match is None or not match["limit"].isdigit():
            return None
        key_filter = self.filter_of(
            (match["cats"], match["priority_threshold"], match["enforcement_level"])
        )
        if key_filter is None:
            return None
        return ParsedKey(
            filter=key_filter,
            threshold_text=match["priority_threshold"],
            sort_by=match["sort_by"],
            limit=int(match["limit"]),
        )

    def filter_fields(self, key: str) -> tuple[str, str, str] | None:
        """The raw (cats, threshold, level) text of a key, cheaply: sweeps memoise their
        verdicts on it, since many keys differ only in sort and limit. None: not our key."""
        match = self._regex.fullmatch(key)
        if match is None or not match["limit"].isdigit():
            return None
        return match["cats"], match["priority_threshold"], match["enforcement_level"]

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

        sep = self._tail_sep
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

    def scan_pattern(self) -> str:
        """SCAN MATCH pattern for every key under this format (and nothing else's)."""
        return escape_glob(self.head) + "*"

    def sweep_pattern(self) -> str:
        """SCAN MATCH pattern for this format's keys and the lease keys guarding them, in one
        pass (each returned key is then told apart by `classify`)."""
        return "*" + escape_glob(self.head) + "*"

    def classify(self, name: str) -> tuple[str, str | None]:
        """What a key `sweep_pattern` returned is: ("cache", name) for a key under this
        format's head, ("lease", K) for the lease key of such a key K, else ("other", None)."""
        if name.startswith(self.head):
            return "cache", name
        guarded = leased_key(name)
        if guarded is not None and guarded.startswith(self.head):
            return "lease", guarded
        return "other", None


def _tail_separator(template: str) -> str | None:
    """`c` when the template ends in `c{sort_by}c{limit}` (c one character), else None."""
    pieces = list(string.Formatter().parse(template))
    if pieces and pieces[-1][1] is None:
        if pieces[-1][0]:
            return None  # literal text after {limit}
        pieces = pieces[:-1]
    if len(pieces) < 2 or [field for _, field, *_ in pieces[-2:]] != ["sort_by", "limit"]:
        return None
    before_sort, between = pieces[-2][0], pieces[-1][0]
    if len(between) == 1 and before_sort.endswith(between):
        return between
    return None


def _compile(prefix: str, template: str) -> re.Pattern[str]:
    """A regex for the template: each field matches up to the literal text that follows it."""
    parts = [re.escape(prefix)]
    pieces = list(string.Formatter().parse(template))
    for index, (literal, field, _spec, _conv) in enumerate(pieces):
        parts.append(re.escape(literal))
        if field is None:
            continue
        following = next((lit for lit, *_ in pieces[index + 1 :] if lit), "")
        stop = following[:1]
        body = f"[^{re.escape(stop)}]*" if stop else ".*"
        parts.append(f"(?P<{field}>{body})")
    return re.compile("".join(parts), re.DOTALL)


# ---- the listener's own state keys ------------------------------------------------------------
# The leader lock and the checkpoint it fences are read and written by one script, so on a
# Redis Cluster they must share a hash slot: both carry the hash tag {listener}.
LISTENER_TAG = "{listener}"


def leader_key(state_prefix: str) -> str:
    return f"{state_prefix}{LISTENER_TAG}:leader"


def checkpoint_key(state_prefix: str) -> str:
    return f"{state_prefix}{LISTENER_TAG}:checkpoint"


def heartbeat_key(state_prefix: str) -> str:
    """The leader's lag for `primer-cache status` (adapters.heartbeat)."""
    return f"{state_prefix}{LISTENER_TAG}:heartbeat"
