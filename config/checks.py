"""Checks for the values of the TOML file: each takes the setting's name (`section.key`), the
value and the problem list, appends one line naming the setting when the value is bad, and
returns the value to keep (converted where the file's form differs from the setting's)."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

# The key format's fields belong to the primer server's client library, the wire contract's
# one owner.
from primer_cache_client.keys import KEY_FIELDS

from config.query import Query

Check = Callable[[str, Any, list[str]], Any]


def int_in(lo: int, hi: int) -> Check:
    def check(name: str, value: Any, problems: list[str]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            problems.append(f"{name} = {value!r} is not an integer in {lo}..{hi}")
        return value

    return check


def optional_int_in(lo: int, hi: int) -> Check:
    """An integer in lo..hi, or `false` for none."""
    inner = int_in(lo, hi)

    def check(name: str, value: Any, problems: list[str]) -> Any:
        return None if value is False else inner(name, value, problems)

    return check


def boolean(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, bool):
        problems.append(f"{name} = {value!r} is not true or false")
    return value


def text(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, str):
        problems.append(f"{name} = {value!r} is not a string")
    return value


def identifier(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, str) or not value.replace("_", "").isalnum():
        problems.append(f"{name} = {value!r} is not a table name (letters, digits, _)")
    return value


def columns(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{name} = {value!r} is not a list of column names")
        return frozenset()
    return frozenset(value)


def key_template(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, str):
        problems.append(f"{name} = {value!r} is not a string")
        return value
    try:
        pieces = [(lit, f) for lit, f, _, _ in string.Formatter().parse(value)]
    except ValueError as exc:
        problems.append(f"{name} = {value!r} is not a format string: {exc}")
        return value
    fields = [f for _, f in pieces if f is not None]
    if any(f is not None and not lit for lit, f in pieces[1:]):
        # Keys must parse back: two fields with nothing between them are ambiguous.
        problems.append(f"{name} = {value!r} has two fields with no text between them")
    if sorted(fields) != sorted(KEY_FIELDS):
        problems.append(
            f"{name} = {value!r} must use each of {{{'}, {'.join(KEY_FIELDS)}}} exactly once"
        )
    if value[:1] == "{":
        problems.append(f"{name} = {value!r} must start with literal text (the SCAN anchor)")
    return value


def warm_patterns(name: str, value: Any, problems: list[str]) -> Any:
    """`[[warm.patterns]]`: one table of the primer server's query parameters per pattern."""
    if not isinstance(value, list):
        problems.append(f"{name} = {value!r} is not a list of tables ([[warm.patterns]])")
        return ()
    patterns = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            problems.append(f"{name}[{index}] = {item!r} is not a table")
            continue
        try:
            patterns.append(Query.from_params(item))
        except ValueError as exc:
            problems.append(f"{name}[{index}]: {exc}")
    return tuple(patterns)
