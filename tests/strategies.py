"""Hypothesis strategies shared by the pure tests."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import strategies as st

from config.query import ENFORCEMENT_LEVELS, Query
from core.keys import KeyFilter
from core.predicate import ElementImage

# Few distinct names so that collisions (and `_`-joined ambiguities) actually happen.
CATEGORY_NAMES = ["security", "development", "process", "cyber_security", "cyber", "a_b", "a", "b"]
categories = st.sampled_from(CATEGORY_NAMES)
thresholds = st.sampled_from([0.0, 0.1, 0.5, 0.8, 0.85, 0.95, 1.0]) | st.floats(0, 1)
levels = st.sampled_from([*ENFORCEMENT_LEVELS])
priorities = st.none() | st.decimals(min_value=0, max_value=1, places=2, allow_nan=False)

queries = st.builds(
    Query,
    categories=st.lists(categories, max_size=3).map(tuple),
    priority_threshold=thresholds,
    enforcement_level=st.sampled_from(["all", *ENFORCEMENT_LEVELS]),
    sort_by=st.just("priority_desc"),
    limit=st.integers(1, 500),
)
images = st.builds(
    ElementImage,
    category=st.none() | categories,
    priority=priorities,
    level=st.none() | levels,
)


def key_filter(query: Query) -> KeyFilter:
    return KeyFilter.of(query)


ZERO = Decimal(0)
