"""tasks.refresh.hottest, the pure choice of which deleted keys to recompute: each key once
(a key deleted ahead of a sweep is found by it again), the hottest first, within the budget,
never a key the warms fill."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import tests.warm_fixtures  # noqa: F401  (tasks.app reads the services' URLs from os.environ)
from adapters.redis.unlink import Heat
from tasks.work.refresh import hottest
from tasks.work.sweep import SweepResult

KEYS = st.sampled_from([f"k{n}" for n in range(12)])
HOT = st.lists(st.tuples(KEYS, st.integers(0, 300)), max_size=40)


@given(HOT, st.integers(0, 15), st.sets(KEYS, max_size=4), st.sampled_from(["IDLETIME", "FREQ"]))
def test_hottest_first_each_key_once(
    hot: list[tuple[str, int]], budget: int, skip: set[str], command: str
) -> None:
    chosen = hottest(SweepResult(hot=list(hot)), Heat(command, 0), budget, skip)
    assert len(chosen) == len(set(chosen)) <= budget
    assert not set(chosen) & skip
    # a key's heat is its best answer: least idle, or most frequent
    best: dict[str, int] = {}
    for key, answer in hot:
        if key not in skip:
            better = min if command == "IDLETIME" else max
            best[key] = better(best.get(key, answer), answer)
    assert len(chosen) == min(budget, len(best))
    heats = [best[key] for key in chosen]
    assert heats == sorted(heats, reverse=command == "FREQ")
    left_out = set(best) - set(chosen)
    if chosen and left_out:
        worst = heats[-1]
        for key in left_out:
            assert (best[key] >= worst) if command == "IDLETIME" else (best[key] <= worst)


def test_a_key_found_twice_is_refreshed_once() -> None:
    result = SweepResult(hot=[("a", 30), ("b", 5), ("a", 0)])
    assert hottest(result, Heat("IDLETIME", 60), 10, set()) == ["a", "b"]
