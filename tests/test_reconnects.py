"""The listener's reconnect policy (core.backoff.Reconnects): quick, capped, afresh after a
healthy term, and a leader that keeps failing steps aside."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.backoff import Reconnects
from worker.listener import HEALTHY_S, RECONNECT_FIRST_S, RECONNECT_MAX_S, STEP_ASIDE_AFTER


def _policy() -> Reconnects:
    return Reconnects(RECONNECT_FIRST_S, RECONNECT_MAX_S, HEALTHY_S, STEP_ASIDE_AFTER)


@given(st.lists(st.floats(min_value=0, max_value=10 * HEALTHY_S), max_size=40))
def test_a_delay_is_never_more_than_half_a_second(terms: list[float]) -> None:
    """The end of an outage is noticed within RECONNECT_MAX_S (0.5 s) plus an attempt."""
    policy = _policy()
    for ran in terms:
        assert RECONNECT_FIRST_S <= policy.failed(ran) <= RECONNECT_MAX_S == 0.5


def test_failures_in_a_row_double_then_a_healthy_term_starts_afresh() -> None:
    policy = _policy()
    assert [policy.failed(0.01) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.step_aside
    assert policy.failed(HEALTHY_S) == 0.1  # a term that streamed a while: a new outage
    assert not policy.step_aside
    policy.succeeded()
    assert policy.failed(0.0) == 0.1


def test_a_leader_steps_aside_on_its_third_failure_in_a_row() -> None:
    policy = _policy()
    steps = []
    for _ in range(4):
        policy.failed(0.5)
        steps.append(policy.step_aside)
    assert steps == [False, False, True, True]
