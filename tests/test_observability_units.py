"""The pure pieces behind metrics, health and the check: month headroom, the sampling
reservoir, which process is a Celery worker, flush reasons, row operations, lag."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.flush_reason import FlushReason
from core.partition_plan import Month, headroom_months
from tasks.work.consistency import reservoir
from tasks.work.multiprocess import is_celery_worker
from worker.metrics import Freshness, RowCounts, operation

months = st.builds(Month, st.integers(1900, 2200), st.integers(1, 12))


@given(months, st.integers(-400, 400))
def test_headroom_is_the_month_distance(now: Month, ahead: int) -> None:
    moment = datetime(now.year, now.month, 15, 12, tzinfo=UTC)
    assert headroom_months(now + ahead, moment) == ahead


def test_headroom_examples() -> None:
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert headroom_months(Month(2027, 3), december) == 3
    assert headroom_months(Month(2026, 12), december) == 0
    assert headroom_months(Month(2025, 9), december) == -15
    assert headroom_months(None, december) == -1


@given(months)
def test_month_parse_round_trips(month: Month) -> None:
    assert Month.parse(str(month)) == month


@pytest.mark.parametrize("text", ["", "2026", "2026-13", "26-1x", "2026/03", "-03"])
def test_month_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="month"):
        Month.parse(text)


@given(st.lists(st.integers(), max_size=50, unique=True), st.integers(0, 60))
def test_reservoir_takes_min_of_size_and_count_distinct_items(items: list[int], size: int) -> None:
    chosen = reservoir(iter(items), size, random.Random(7))
    assert len(chosen) == min(size, len(items))
    assert set(chosen) <= set(items) and len(set(chosen)) == len(chosen)


def test_reservoir_is_uniform_enough() -> None:
    rng = random.Random(11)
    hits: Counter[int] = Counter()
    for _ in range(4000):
        hits.update(reservoir(range(10), 3, rng))
    # each item is chosen with probability 3/10: 1,200 of 4,000 runs expected
    assert all(1000 < hits[item] < 1400 for item in range(10)), hits


@pytest.mark.parametrize(
    ("argv", "worker"),
    [
        (["/venv/bin/celery", "-A", "tasks", "worker", "-c", "2"], True),
        (["/usr/lib/python3/site-packages/celery/__main__.py", "-A", "tasks", "worker"], True),
        (["/venv/bin/celery", "-A", "tasks", "beat"], False),
        (["/venv/bin/primer-cache", "listen"], False),
        (["/venv/bin/primer-cache", "status", "worker"], False),
        ([], False),
    ],
)
def test_only_a_celery_worker_uses_multiprocess_mode(argv: list[str], worker: bool) -> None:
    assert is_celery_worker(argv) is worker


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("cold start: no checkpoint (first start or lost)", "cold_start"),
        ("DDL: ALTER TABLE megamind_chunks ...", "ddl"),
        ("unreadable row in megamind_chunks: x", "odd_row"),
        ("operator: invalidate --all", "operator"),
        ("", "operator"),
        ("something new", "other"),
    ],
)
def test_flush_reason_labels(reason: str, label: str) -> None:
    assert FlushReason.of_text(reason) == label


def test_row_operations_and_counts() -> None:
    assert operation(None, {"a": 1}) == "insert"
    assert operation({"a": 1}, {"a": 2}) == "update"
    assert operation({"a": 1}, None) == "delete"
    counts = RowCounts()
    counts.add("t", "update", False)
    counts.add("t", "update", True)
    assert counts.rows == {("t", "update"): 2} and counts.ignored == 1
    counts.flush()
    assert counts.rows == {} and counts.ignored == 0


def test_lag_is_zero_when_caught_up_or_standing_by() -> None:
    fresh = Freshness()
    assert fresh.lag() == 0  # standing by
    fresh.lead(True, last_commit=1.0)
    assert fresh.lag() > 1e9  # a 1970 commit time: far behind
    assert fresh.problem(max_lag_s=60, stall_s=30) is not None
    fresh.idle()
    assert fresh.lag() == 0 and fresh.problem(max_lag_s=60, stall_s=30) is None
    fresh.took(2.0)
    assert fresh.lag() > 1e9
    fresh.lead(False)
    assert fresh.lag() == 0
