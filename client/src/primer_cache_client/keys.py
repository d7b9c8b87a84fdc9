"""The cache key format: the one place that builds and reads primer keys (the sidecar imports it).

Default keys reproduce the seed's `generate_cache_key` under the L2 prefix, byte for byte:

    megamind:primer:primer:<cats>:<priority_threshold>:<enforcement_level>:<sort_by>:<limit>

`cats` is `"_".join(sorted(categories))`, `priority_threshold` is `str(float(...))`, `limit` is
`str(int(...))`. Categories may themselves contain `_`, so a read key keeps `cats` as the
joined text.

Lease keys: the lease on cache key K is `primer-cache:lease:{T}K`, T being K's Redis hash tag,
so it lives in K's hash slot (Redis Cluster runs a function on one slot only). The Lua library
(functions.py) computes the same name; tests hold the two to one spec.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Protocol

DEFAULT_KEY_PREFIX = "megamind:primer:"
DEFAULT_KEY_TEMPLATE = "primer:{cats}:{priority_threshold}:{enforcement_level}:{sort_by}:{limit}"
KEY_FIELDS = ("cats", "priority_threshold", "enforcement_level", "sort_by", "limit")
# Fixed, not under a configurable prefix: the function library is one per Redis server.
LEASE_PREFIX = "primer-cache:lease:"

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class KeyParams(Protocol):
    """What a key is built from (the sidecar's Query and the client's PrimerQuery both are)."""

    @property
    def categories(self) -> tuple[str, ...]: ...
    @property
    def priority_threshold(self) -> float: ...
    @property
    def enforcement_level(self) -> str: ...
    @property
    def sort_by(self) -> str: ...
    @property
    def limit(self) -> int: ...


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


class KeyFormat:
    """Builds and reads keys for one (prefix, template) pair."""

    def __init__(self, prefix: str = DEFAULT_KEY_PREFIX, template: str = DEFAULT_KEY_TEMPLATE):
        self.prefix = prefix
        self.template = template
        self.head = prefix + template.split("{", 1)[0]
        self._regex = _compile(prefix, template)
        self._tail_sep = _tail_separator(template)

    def key(
        self,
        categories: Iterable[str],
        priority_threshold: float,
        enforcement_level: str,
        sort_by: str,
        limit: int,
    ) -> str:
        """The key of one query (categories sorted here: they are a set to the server)."""
        return self.prefix + self.template.format(
            cats="_".join(sorted(categories)),
            priority_threshold=str(float(priority_threshold)),
            enforcement_level=enforcement_level,
            sort_by=sort_by,
            limit=str(int(limit)),
        )

    def build(self, query: KeyParams) -> str:
        return self.key(
            query.categories,
            query.priority_threshold,
            query.enforcement_level,
            query.sort_by,
            query.limit,
        )

    def fields(self, key: str) -> dict[str, str] | None:
        """The raw text of each template field of `key`; None: not a key this format builds."""
        match = self._regex.fullmatch(key)
        if match is None or not match["limit"].isdigit():
            return None
        return match.groupdict()

    def filter_fields(self, key: str) -> tuple[str, str, str] | None:
        """The raw (cats, threshold, level) text of a key, cheaply: sweeps memoise their
        verdicts on it, since many keys differ only in sort and limit. None: not our key."""
        match = self._regex.fullmatch(key)
        if match is None or not match["limit"].isdigit():
            return None
        return match["cats"], match["priority_threshold"], match["enforcement_level"]

    def filter_text(self, key: str) -> str:
        """The part of `key` that decides its filter, to group keys that share a verdict:
        the key before its sort and limit where the template ends in them, else the whole key."""
        sep = self._tail_sep
        if sep is not None:
            parts = key.rsplit(sep, 2)
            if len(parts) == 3 and parts[2].isdigit():
                return parts[0]
        return key

    @property
    def tail_separator(self) -> str | None:
        """`c` when the template ends in `c{sort_by}c{limit}` (c one character), else None."""
        return self._tail_sep

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
