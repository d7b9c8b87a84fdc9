"""The affected-key predicate against a brute-force model of the primer query (its WHERE: realm
GLOBAL, category listed, priority at least the threshold, level equal)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from config.query import Query
from config.settings import DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE
from core.keys import KeyFilter, KeyFormat
from core.predicate import ChangeIndex, ElementImage, category_listed, matches
from tests.strategies import images, queries

KEYS = KeyFormat(DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE)


def in_result(image: ElementImage, query: Query) -> bool:
    """Could the element appear in the query's answer? Written from the primer query's filter
    directly (sort and limit aside: a change moves an element in or out of the top N only if it
    matches), not from core.predicate."""
    if query.categories and image.category not in query.categories:
        return False
    if query.enforcement_level != "all" and image.level != query.enforcement_level:
        return False
    priority = image.priority if image.priority is not None else Decimal(0)
    return priority >= Decimal(str(query.priority_threshold))


def parsed_filter(query: Query) -> KeyFilter:
    parsed = KEYS.parse(KEYS.build(query))
    assert parsed is not None
    return parsed.filter


@given(st.lists(images, max_size=8), queries)
def test_index_equals_brute_force(batch: list[ElementImage], query: Query) -> None:
    key = parsed_filter(query)
    assert ChangeIndex(batch).affects(key) == any(matches(image, key) for image in batch)


@given(
    images.filter(lambda image: "_" not in (image.category or "")),
    queries.filter(lambda q: all("_" not in c for c in q.categories)),
)
def test_predicate_is_exact_without_underscores(image: ElementImage, query: Query) -> None:
    # With `_` in any category a key's list is ambiguous ("a_b" is also ("a", "b")): then
    # the predicate may match more (next test), never less.
    assert matches(image, parsed_filter(query)) == in_result(image, query)


@given(images, queries)
def test_predicate_is_complete_with_underscores(image: ElementImage, query: Query) -> None:
    # `_` makes a key's category list ambiguous; the predicate must err on deleting.
    if in_result(image, query):
        assert matches(image, parsed_filter(query))


def test_index_of_nothing_affects_nothing() -> None:
    index = ChangeIndex([])
    assert not index
    assert not index.affects(parsed_filter(Query()))


# ---- the seed's gaps, by name ----------------------------------------------------------------

SECURITY_REQUIRED = ElementImage("security", Decimal("0.90"), "required")


def hit(image: ElementImage, query: Query) -> bool:
    return ChangeIndex([image]).affects(parsed_filter(query))


def test_all_categories_keys_are_hit() -> None:
    assert hit(SECURITY_REQUIRED, Query(()))  # the seed's *security* pattern misses this


def test_all_enforcement_keys_are_hit() -> None:
    assert hit(SECURITY_REQUIRED, Query(("security",), enforcement_level="all"))
    assert not hit(SECURITY_REQUIRED, Query(("security",), enforcement_level="optional"))


def test_priority_crossing_a_threshold_either_way() -> None:
    low = ElementImage("security", Decimal("0.50"), "required")
    key = Query(("security",), priority_threshold=0.8)
    assert not hit(low, key)
    assert ChangeIndex([low, SECURITY_REQUIRED]).affects(parsed_filter(key))  # up
    assert ChangeIndex([SECURITY_REQUIRED, low]).affects(parsed_filter(key))  # and down


def test_threshold_compares_as_decimal_text() -> None:
    # 0.8 as a float is 0.8000000000000000444…; DECIMAL 0.80 >= 0.8 in SQL.
    assert hit(ElementImage("security", Decimal("0.80"), None), Query((), 0.8))


def test_category_move_hits_old_and_new() -> None:
    moved = [SECURITY_REQUIRED, ElementImage("process", Decimal("0.90"), "required")]
    index = ChangeIndex(moved)
    assert index.affects(parsed_filter(Query(("security",))))
    assert index.affects(parsed_filter(Query(("process",))))
    assert not index.affects(parsed_filter(Query(("development",))))


def test_cybersecurity_is_not_security() -> None:
    assert not hit(ElementImage("cybersecurity", Decimal("0.9"), None), Query(("security",)))


def test_null_category_hits_all_categories_keys_only() -> None:
    image = ElementImage(None, Decimal("0.9"), "required")
    assert hit(image, Query(()))
    assert not hit(image, Query(("security",)))


def test_null_priority_counts_as_zero() -> None:
    image = ElementImage("security", None, None)
    assert hit(image, Query(("security",), 0.0))
    assert not hit(image, Query(("security",), 0.1))


def test_category_with_underscore() -> None:
    image = ElementImage("cyber_security", Decimal("0.9"), None)
    assert hit(image, Query(("cyber_security",)))
    assert hit(image, Query(("cyber_security", "process")))
    assert not hit(image, Query(("security",)))
    assert not hit(image, Query(("cyber",)))
    # "cyber" + "security" builds the same key as "cyber_security": it must be hit.
    assert hit(image, Query(("cyber", "security")))


def test_category_listed_is_token_aligned() -> None:
    assert category_listed("a_b", "a_b_c")
    assert category_listed("b_c", "a_b_c")
    assert category_listed("b", "a_b_c")
    assert not category_listed("b_", "a_b_c")
    assert not category_listed("ab", "a_b_c")
    assert not category_listed("security", "cybersecurity")


def test_wildcard_hits_every_level_and_threshold() -> None:
    image = ElementImage.wildcard("*")
    assert hit(image, Query(("*",), 1.0, "optional"))
    assert not hit(image, Query(("security",)))
