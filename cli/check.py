"""`primer-cache check [--json]`: every cached primer response against a fresh query.

Exit status 1 when any key is stale. A mismatch is confirmed once (the key read again and
the query run again) so a change landing mid-check is not reported as staleness.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from config import load_settings
from config.query import Query

if TYPE_CHECKING:
    from core.keys import ParsedKey
    from tasks.runtime import Runtime


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "check", help="compare cached responses with fresh queries; exit 1 when any is stale"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


@dataclass
class CheckResult:
    checked: int = 0
    stale: list[str] = field(default_factory=list)
    unparseable: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "stale": len(self.stale),
            "unparseable": self.unparseable,
            "stale_keys": self.stale,
        }


def check_cache(rt: Runtime) -> CheckResult:
    """Scan every key under the primer prefix and compare it with a fresh query."""
    result = CheckResult()
    for raw in rt.redis.scan_iter(match=rt.keys.scan_pattern(), count=1000):
        key = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
        parsed = rt.keys.parse(key)
        if parsed is None:
            result.unparseable += 1
            continue
        cached = rt.redis.get(raw)
        if cached is None:
            continue  # expired or invalidated since the scan saw it
        result.checked += 1
        if _matches(rt, parsed, cached):
            continue
        again = rt.redis.get(raw)
        if again == cached and not _matches(rt, parsed, cached):
            result.stale.append(key)
    return result


def _matches(rt: Runtime, parsed: ParsedKey, cached: bytes | str) -> bool:
    from core.response import comparable, decode, encode
    from tasks.primer_query import fresh_response

    try:
        held = decode(cached)
    except ValueError:
        return False
    query = _query_of(parsed, held)
    # Through JSON and back, so both sides hold the same Python types.
    fresh = decode(encode(fresh_response(rt.db(), rt.settings, query), compression=False))
    ignored = rt.settings.ignored_columns
    return comparable(held, ignored) == comparable(fresh, ignored)


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


def run(args: argparse.Namespace) -> int:
    from tasks.runtime import Runtime

    result = check_cache(Runtime(load_settings()))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        for key in result.stale:
            print(f"stale: {key}")
        print(
            f"checked {result.checked} keys: {len(result.stale)} stale, "
            f"{result.unparseable} unparseable"
        )
    return 1 if result.stale else 0
