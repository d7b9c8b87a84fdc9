"""The consistency check: cached primer responses against fresh queries.

`primer-cache check [--sample N]` runs it on demand; with `check.sample` set, beat runs it on
a random sample every `check.every_s` and the worker exports what it found
(primer_cache_check_keys{result=checked|stale|missing|undecodable}).

A mismatch is confirmed once (the key read again and the query run again), so a change
landing mid-check is not reported as staleness.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from adapters.mysql.primer_query import fresh_response
from config.query import Query
from core.keys import ParsedKey
from core.response import comparable, decode, encode
from tasks.work.runtime import Runtime


@dataclass
class CheckResult:
    checked: int = 0
    stale: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # configured warm keys not in the cache
    unparseable: int = 0
    sample: int | None = None  # None: every key was checked

    @property
    def ok(self) -> bool:
        """Nothing stale and nothing the primer server could not read."""
        return not self.stale and not self.undecodable

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "stale": len(self.stale),
            "undecodable": len(self.undecodable),
            "missing": len(self.missing),
            "unparseable": self.unparseable,
            "sample": self.sample,
            "stale_keys": self.stale,
            "undecodable_keys": self.undecodable,
            "missing_keys": self.missing,
        }


def check_cache(
    rt: Runtime, sample: int | None = None, rng: random.Random | None = None
) -> CheckResult:
    """Compare every key under the primer prefix (or `sample` of them, chosen uniformly at
    random) with a fresh query; also list the configured warm keys that are missing."""
    result = CheckResult(sample=sample)
    scanned = rt.redis.scan_iter(match=rt.keys.scan_pattern(), count=1000)
    keys = scanned if sample is None else reservoir(scanned, sample, rng or random.Random())
    for raw in keys:
        key = _text(raw)
        parsed = rt.keys.parse(key)
        if parsed is None:
            result.unparseable += 1
            continue
        cached = rt.redis.get(raw)
        if cached is None:
            continue  # expired or invalidated since the scan saw it
        result.checked += 1
        verdict = _verdict(rt, parsed, cached)
        if verdict == "fresh":
            continue
        again = rt.redis.get(raw)
        if again != cached:
            continue  # replaced meanwhile: a newer value is not this one's staleness
        verdict = _verdict(rt, parsed, cached)
        if verdict == "stale":
            result.stale.append(key)
        elif verdict == "undecodable":
            result.undecodable.append(key)
    warm_keys = [rt.keys.build(query) for query in rt.settings.warm.patterns]
    pipe = rt.redis.pipeline(transaction=False)
    for key in warm_keys:
        pipe.exists(key)
    result.missing = [
        key for key, there in zip(warm_keys, pipe.execute(), strict=True) if not there
    ]
    return result


T = TypeVar("T")


def reservoir(items: Iterable[T], size: int, rng: random.Random) -> list[T]:
    """A uniform random sample of `size` items of a stream read once (Algorithm R): a SCAN of
    a million keys need not be held in memory to pick a hundred."""
    chosen: list[T] = []
    for seen, item in enumerate(items):
        if seen < size:
            chosen.append(item)
        else:
            slot = rng.randrange(seen + 1)
            if slot < size:
                chosen[slot] = item
    return chosen


def _verdict(rt: Runtime, parsed: ParsedKey, cached: bytes | str) -> str:
    try:
        held = decode(cached)
    except ValueError:
        return "undecodable"
    query = _query_of(parsed, held)
    # Through JSON and back, so both sides hold the same Python types.
    fresh = decode(encode(fresh_response(rt.db(), rt.settings, query), compression=False))
    ignored = rt.settings.cache.ignored_columns
    return "fresh" if comparable(held, ignored) == comparable(fresh, ignored) else "stale"


def _query_of(parsed: ParsedKey, held: dict[str, Any]) -> Query:
    """The key's query. A key's category text is ambiguous when a category contains `_`
    ("a_b" is also ("a", "b")); the response names its categories, so use them when they
    build the same text."""
    query = parsed.query()
    named = held.get("categories_included")
    if (
        "_" in parsed.filter.cats
        and isinstance(named, list)
        and all(isinstance(c, str) for c in named)
        and "_".join(sorted(named)) == parsed.filter.cats
    ):
        return replace(query, categories=tuple(named))
    return query


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
