"""Lease key names (core.keys): in the cache key's hash slot, parsed back exactly, told apart
from cache keys and everything else a sweep's SCAN returns. Redis's own hash-tag rule is the
model (redis-py's key_slot implements it)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from redis.crc import key_slot

from config.query import Query
from config.settings import DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE, LEASE_PREFIX
from core.keys import KeyFormat, hash_tag, lease_key, leased_key, slot_text, tagged, untag
from tests.strategies import queries

SEED = KeyFormat(DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE)
# Keys made of few characters, braces frequent: every hash-tag case turns up.
odd_keys = st.text(alphabet="ab{}:_", max_size=12)


def slot(key: str) -> int:
    return key_slot(key.encode("utf-8", "surrogateescape"))


@given(odd_keys)
@example("")
@example("{}")
@example("a}b")
@example("{}x}")
@example("a{b{c}d")
@example("{a}b")
def test_hash_tag_is_the_text_redis_hashes(key: str) -> None:
    # key_slot hashes the tag when there is one: slot_text names exactly that text
    assert slot(key) == slot(slot_text(key))
    tag = hash_tag(key)
    if tag is not None:
        assert tag and "}" not in tag and "{" + tag + "}" in key


@given(odd_keys)
@example("a}b")
@example("{}x}")
@example("")
def test_a_lease_key_shares_its_cache_keys_slot_or_does_not_exist(key: str) -> None:
    lease = lease_key(key)
    text = slot_text(key)
    if not text or "}" in text:
        assert lease is None  # unleasable: answered busy 0
        return
    assert lease is not None
    assert lease.startswith(LEASE_PREFIX)
    assert slot(lease) == slot(key)
    assert leased_key(lease) == key


@given(queries)
def test_every_seed_key_is_leasable(query: Query) -> None:
    key = SEED.build(query)
    lease = lease_key(key)
    assert lease == f"{LEASE_PREFIX}{{{key}}}{key}"
    assert SEED.classify(lease) == ("lease", key)
    assert SEED.classify(key) == ("cache", key)


@st.composite
def prefixes_and_names(draw: st.DrawFn) -> tuple[str, str, str]:
    """A prefix, a key, and a name that starts with the prefix: the name `tagged` builds for
    the key (often), or that text with a piece cut or added, or the prefix and any text.
    (Names drawn from the keys' alphabet alone never start with the prefix: untag refused
    them all and the assert never ran.)"""
    prefix = "p:" + draw(odd_keys).replace("{", "")
    key = draw(odd_keys)
    built = tagged(prefix, key) or prefix + "{" + key + "}"
    name = draw(
        st.sampled_from(
            [built, built, prefix + key, prefix + "{" + key, built[:-1], built + draw(odd_keys)]
        )
    )
    return prefix, key, name


@given(prefixes_and_names())
def test_untag_accepts_only_names_tagged_built(case: tuple[str, str, str]) -> None:
    prefix, key, name = case
    got = untag(prefix, name)
    if got is not None:
        assert tagged(prefix, got) == name
    else:
        assert tagged(prefix, key) != name


@given(odd_keys, odd_keys)
def test_untag_reads_back_every_tagged_name(prefix_tail: str, key: str) -> None:
    prefix = "p:" + prefix_tail.replace("{", "")
    name = tagged(prefix, key)
    assert (name is None) == (not slot_text(key) or "}" in slot_text(key))
    if name is not None:
        assert untag(prefix, name) == key


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("megamind:primer:primer::0.0:all:priority_desc:100", "cache"),
        ("megamind:primer:primer:junk", "cache"),  # under the head: judged (unparseable)
        ("megamind:primer:other", "other"),  # under the prefix, not the head
        (
            f"{LEASE_PREFIX}{{megamind:primer:primer::0.0:all:x:1}}megamind:primer:primer::0.0:all:x:1",
            "lease",
        ),
        (f"{LEASE_PREFIX}{{other}}megamind:primer:primer::0.0:all:x:1", "other"),  # wrong tag
        (f"{LEASE_PREFIX}{{other:megamind:primer:primer:}}other:megamind:primer:primer:", "other"),
        ("x:megamind:primer:primer::0.0", "other"),
        ("primer-cache:warm:lock:{megamind:primer:primer:a}megamind:primer:primer:a", "other"),
    ],
)
def test_classify(name: str, kind: str) -> None:
    assert SEED.classify(name)[0] == kind


def test_sweep_pattern_finds_both_kinds() -> None:
    import fnmatch

    key = SEED.build(Query(("security",)))
    pattern = SEED.sweep_pattern()
    assert fnmatch.fnmatchcase(key, pattern)
    assert fnmatch.fnmatchcase(lease_key(key) or "", pattern)
    glob = KeyFormat("a*b:", DEFAULT_KEY_TEMPLATE)
    assert glob.sweep_pattern() == "*a\\*b:primer:*"
