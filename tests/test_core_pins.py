"""Behaviour of the pure core that the other unit tests left unpinned (found by mutation
testing, docs/testing.md): the key format's one-rsplit fast path and the exact cached bytes."""

from __future__ import annotations

import zlib

import pytest

from config.query import Query
from config.settings import DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat
from core.response import decode, encode

SEED = KeyFormat(DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE)


@pytest.mark.parametrize(
    "template, separator",
    [
        (DEFAULT_KEY_TEMPLATE, ":"),  # the seed's: `…{sort_by}:{limit}`
        ("v2|{enforcement_level}|{cats}|{priority_threshold}|{sort_by}|{limit}", "|"),
        ("p:{cats}:{priority_threshold}:{enforcement_level}:{sort_by}:{limit}:end", None),
        ("p:{cats}:{priority_threshold}:{enforcement_level}:{limit}:{sort_by}", None),
        ("p:{cats}:{priority_threshold}:{enforcement_level}:{sort_by}::{limit}", None),
        ("p:{cats}:{priority_threshold}:{enforcement_level}|{sort_by}:{limit}", None),
    ],
)
def test_the_one_rsplit_fast_path_is_taken_exactly_where_it_is_sound(
    template: str, separator: str | None
) -> None:
    """Where the template ends in `c{sort_by}c{limit}` the filter is the text before the
    last two separators (the sweep's memo, one rsplit per key); elsewhere the whole key."""
    keys = KeyFormat("m:", template)
    key = keys.build(Query(("security",), 0.5, "required", limit=7))
    front = keys.filter_text(key)
    if separator is None:
        assert front == key
    else:
        assert front == key.rsplit(separator, 2)[0] and front != key
    # The verdicts agree with the regex's parse either way.
    judge = keys.judge(lambda f: "security" in f.cats)
    assert judge(key) is True and judge("m:garbage") is None


def test_cached_bytes_are_compact_utf8_json_as_documented() -> None:
    response = {"global_elements": [{"title": "Sécurité ✓", "priority_score": 0.5}]}
    raw = encode(response, compression=False)
    assert raw == '{"global_elements":[{"title":"Sécurité ✓","priority_score":0.5}]}'.encode()
    assert zlib.decompress(encode(response, compression=True)) == raw
    # A client with decode_responses hands over str: the uncompressed value still reads.
    assert decode(raw.decode()) == response
    assert decode(raw) == decode(zlib.compress(raw)) == response
