"""The key format: byte-for-byte the seed's keys, parse(build(q)) == q, safe SCAN patterns."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.query import Query
from config.settings import DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat, escape_glob
from core.predicate import ChangeIndex, ElementImage
from tests.strategies import queries

SEED = KeyFormat(DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE)


def generate_cache_key(params):  # the seed's function, verbatim
    """Generate hierarchical cache key"""
    key_parts = [
        "primer",
        "_".join(sorted(params.get("include_categories", []))),
        str(params.get("priority_threshold", 0.0)),
        params.get("enforcement_level", "all"),
        params.get("sort_by", "priority_desc"),
        str(params.get("limit", 100)),
    ]
    return ":".join(key_parts)


@given(queries)
def test_build_matches_the_seed_byte_for_byte(query: Query) -> None:
    assert SEED.build(query) == "megamind:primer:" + generate_cache_key(query.to_params())


def test_seed_defaults() -> None:
    assert SEED.build(Query()) == "megamind:primer:primer::0.0:all:priority_desc:100"
    assert SEED.build(Query(("security",), enforcement_level="required")) == (
        "megamind:primer:primer:security:0.0:required:priority_desc:100"
    )


@given(queries.filter(lambda q: all("_" not in c for c in q.categories)))
def test_parse_inverts_build(query: Query) -> None:
    parsed = SEED.parse(SEED.build(query))
    assert parsed is not None
    assert parsed.query() == query


@given(queries)
def test_parse_keeps_the_joined_categories(query: Query) -> None:
    parsed = SEED.parse(SEED.build(query))
    assert parsed is not None
    assert parsed.filter.cats == "_".join(query.categories)
    assert parsed.limit == query.limit


@pytest.mark.parametrize(
    "key",
    [
        "megamind:primer:primer:security:0.0:required:priority_desc",  # a field short
        "megamind:primer:primer:security:0.0:required:priority_desc:100:x",  # a field long
        "megamind:primer:primer:security:high:required:priority_desc:100",  # threshold
        "megamind:primer:primer:security:nan:required:priority_desc:100",
        "megamind:primer:primer:security:inf:required:priority_desc:100",
        "megamind:primer:primer:security:0.5:required:priority_desc:-1",  # limit
        "megamind:primer:primer:security:0.5:required:priority_desc:ten",
        "megamind:primer:other",
    ],
)
def test_parse_rejects_keys_it_does_not_build(key: str) -> None:
    assert SEED.parse(key) is None


@given(queries, st.sampled_from(["", "primer:", "app[1]:", "x*y?:"]))
def test_any_prefix_round_trips(query: Query, prefix: str) -> None:
    keys = KeyFormat(prefix, DEFAULT_KEY_TEMPLATE)
    key = keys.build(query)
    assert key.startswith(prefix)
    assert keys.parse(key) == SEED.parse(SEED.build(query))


def test_custom_template_round_trips() -> None:
    keys = KeyFormat("p/", "v2|{enforcement_level}|{cats}|{priority_threshold}|{sort_by}|{limit}")
    query = Query(("security", "process"), 0.8, "required", limit=7)
    assert keys.build(query) == "p/v2|required|process_security|0.8|priority_desc|7"
    parsed = keys.parse(keys.build(query))
    assert parsed is not None and parsed.query() == query
    assert keys.scan_pattern() == "p/v2|*"


def _glob_match(pattern: str, text: str) -> bool:
    """Redis glob semantics for the subset we emit: `*`, and backslash escapes."""
    regex = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 1
            regex += re.escape(pattern[i])
        elif ch == "*":
            regex += ".*"
        elif ch in "?[]":
            raise AssertionError(f"unescaped {ch!r} in {pattern!r}")
        else:
            regex += re.escape(ch)
        i += 1
    return re.fullmatch(regex, text, re.DOTALL) is not None


@given(st.text(max_size=12), queries)
def test_scan_pattern_matches_exactly_the_prefix(prefix: str, query: Query) -> None:
    keys = KeyFormat(prefix, DEFAULT_KEY_TEMPLATE)
    assert _glob_match(keys.scan_pattern(), keys.build(query))
    assert not _glob_match(keys.scan_pattern(), "primer-cache:checkpoint")


def test_escape_glob_neutralises_metacharacters() -> None:
    assert escape_glob("*") == "\\*"
    assert escape_glob("a?[b]\\") == "a\\?\\[b\\]\\\\"
    assert _glob_match(escape_glob("*") + ":*", "*:x")
    assert not _glob_match(escape_glob("*") + ":*", "security:x")


_field_text = st.text(alphabet="ab_:.0159-", max_size=6)
raw_keys = st.builds(
    lambda cats, thr, level, sort, limit, tail: (cats, thr, level, sort, limit, tail),
    cats=st.sampled_from(["", "security", "a_b", "x:y"]) | _field_text,
    thr=st.sampled_from(["0.0", "0.8", "1e-05", "nan", "inf", "x", ""]) | _field_text,
    level=st.sampled_from(["all", "required", ""]) | _field_text,
    sort=st.sampled_from(["priority_desc", "", "a:b"]) | _field_text,
    limit=st.sampled_from(["100", "7", "", "x", "1:2"]) | _field_text,
    tail=st.sampled_from(["", ":", ":9"]),
)
TEMPLATES = [
    DEFAULT_KEY_TEMPLATE,
    "v2|{enforcement_level}|{cats}|{priority_threshold}|{sort_by}|{limit}",  # another separator
    "p:{limit}:{sort_by}:{cats}:{priority_threshold}:{enforcement_level}",  # no rsplit fast path
]


@given(
    st.sampled_from(TEMPLATES),
    st.lists(raw_keys, max_size=25),
    st.lists(
        st.builds(
            ElementImage,
            st.none() | st.sampled_from(["security", "a", "b", "a_b"]),
            st.none() | st.decimals(0, 1, places=2),
            st.none() | st.just("required"),
        ),
        max_size=4,
    ),
)
def test_judge_agrees_with_parse(
    template: str, fields: list[tuple[str, ...]], images: list[ElementImage]
) -> None:
    keys = KeyFormat("m:", template)
    index = ChangeIndex(images)
    judge = keys.judge(index.affects)
    # Each key also with a good and a bad limit: the same front text, different answers.
    variants = [(*f[:4], limit, f[5]) for f in fields for limit in (f[4], "100", "x")]
    for cats, thr, level, sort, limit, tail in variants + variants:  # memoised answers too
        key = (
            "m:"
            + template.format(
                cats=cats,
                priority_threshold=thr,
                enforcement_level=level,
                sort_by=sort,
                limit=limit,
            )
            + tail
        )
        parsed = keys.parse(key)
        assert judge(key) == (None if parsed is None else index.affects(parsed.filter)), key
