"""The completion protocol: the tasks' reports in Redis (adapters.redis.completion) and the
leader's ledger (worker.ledger: pure, so tested exhaustively with hypothesis)."""

from __future__ import annotations

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.redis.completion import STATE_TTL_S, BatchState, Completion, completion_key
from core.batch import Batch
from core.position import FilePosition
from tests.services import delete_prefix, unique
from worker.ledger import Ledger

# ---- the reports, against the real Redis --------------------------------------------------------


def test_progress_and_done_are_reported_per_term_and_seq(redis_client: redis.Redis) -> None:
    prefix = unique("done") + ":"
    try:
        completion = Completion(redis_client, prefix)
        first, second = Batch(term="a.1", seq=1), Batch(term="a.1", seq=2)
        assert completion.states("a.1", [1, 2]) == {1: BatchState(), 2: BatchState()}
        completion.progress(first)
        completion.progress(first)
        completion.done(second)
        completion.done(Batch(term="b.1", seq=1))  # another term's batch 1
        assert completion.states("a.1", [1, 2, 3]) == {
            1: BatchState(done=False, progress=2),
            2: BatchState(done=True, progress=0),
            3: BatchState(),
        }
        assert 0 < redis_client.ttl(completion_key(prefix, "a.1")) <= STATE_TTL_S
    finally:
        delete_prefix(redis_client, prefix)


def test_swept_is_progress_and_is_read_back(redis_client: redis.Redis) -> None:
    prefix = unique("done") + ":"
    try:
        completion = Completion(redis_client, prefix)
        batch = Batch(term="a.1", seq=1)
        completion.progress(batch)
        completion.swept(batch)  # a read replica was late: follow-up passes to come
        assert completion.states("a.1", [1]) == {1: BatchState(progress=2, swept=True)}
        completion.done(batch)
        assert completion.states("a.1", [1])[1].done
    finally:
        delete_prefix(redis_client, prefix)


def test_swept_batches_hold_the_checkpoint_but_not_the_stream() -> None:
    """A batch waiting only on a late read replica's follow-up passes does not count against
    max_in_flight (the pipeline goes on at the primary's pace) but stays the checkpoint."""
    ledger = Ledger("t", at(0), 100, limit=2, redeliver_after=30)
    first = ledger.publish(Batch(reason="1"), now=0)
    ledger.advance(at(5), 105)
    second = ledger.publish(Batch(reason="2"), now=0)
    ledger.advance(at(9), 109)
    assert ledger.full
    ledger.update({first.seq: BatchState(progress=1, swept=True)}, now=1)
    assert not ledger.full and ledger.checkpoint() == (at(0), 100)
    third = ledger.publish(Batch(reason="3"), now=1)
    ledger.advance(at(12), 112)
    assert ledger.full  # second and third are not swept
    ledger.update({second.seq: BatchState(done=True), third.seq: BatchState(done=True)}, now=2)
    assert not ledger.full and ledger.checkpoint() == (at(0), 100)  # first still pending
    ledger.update({first.seq: BatchState(done=True)}, now=3)
    assert ledger.checkpoint() == (at(12), 112) and len(ledger) == 0


def test_batches_outside_the_protocol_write_nothing(redis_client: redis.Redis) -> None:
    prefix = unique("done") + ":"
    try:
        completion = Completion(redis_client, prefix)
        completion.done(Batch(reason="operator", seq=0, term="a.1"))
        completion.progress(Batch(seq=4))  # no term
        assert list(redis_client.scan_iter(match=f"{prefix}*")) == []
        assert completion.states("a.1", []) == {}
    finally:
        delete_prefix(redis_client, prefix)


# ---- the ledger ---------------------------------------------------------------------------------


def at(n: int) -> FilePosition:
    return FilePosition("binlog.000001", n)


def test_checkpoint_waits_for_the_oldest_batch_not_done() -> None:
    ledger = Ledger("t", at(0), 100, limit=2, redeliver_after=30)
    first = ledger.publish(Batch(reason="1"), now=0)
    ledger.advance(at(5), 105)
    second = ledger.publish(Batch(reason="2"), now=1)
    ledger.advance(at(9), 109)
    assert (first.term, first.seq, second.seq) == ("t", 1, 2)
    assert ledger.full and ledger.checkpoint() == (at(0), 100)
    assert ledger.update({2: BatchState(done=True)}, now=2) != []
    assert ledger.checkpoint() == (at(0), 100)  # batch 1 is not done: nothing passes it
    ledger.update({1: BatchState(done=True)}, now=3)
    assert not ledger.full and len(ledger) == 0
    assert ledger.checkpoint() == (at(9), 109)


def test_overdue_batches_come_back_until_done_and_progress_postpones_them() -> None:
    ledger = Ledger("t", at(0), 0, limit=0, redeliver_after=30)
    batch = ledger.publish(Batch(reason="x"), now=0)
    assert ledger.overdue(29.9) == []
    (entry,) = ledger.overdue(30)
    assert entry.batch == batch and entry.deliveries == 2
    ledger.update({batch.seq: BatchState(progress=1)}, now=50)
    assert ledger.overdue(79) == []  # progress at 50: due at 80
    assert [e.deliveries for e in ledger.overdue(80)] == [3]
    ledger.update({batch.seq: BatchState(progress=1)}, now=100)  # the same count: no progress
    assert ledger.overdue(110) == [entry]
    assert not ledger.full  # limit 0: no backpressure


def test_cold_start_flush_holds_every_checkpoint_until_done() -> None:
    ledger = Ledger("t", None, 0, limit=2, redeliver_after=30)
    ledger.publish(Batch(flush=True, reason="cold start"), now=0)
    ledger.advance(at(3), 3)
    assert ledger.checkpoint() == (None, 0)
    ledger.update({1: BatchState(done=True)}, now=1)
    assert ledger.checkpoint() == (at(3), 3)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(1, 5), st.booleans()),  # txns; publish them?
        st.tuples(st.just("done"), st.integers(0, 30), st.booleans()),  # which; or progress
        st.tuples(st.just("wait"), st.integers(1, 40), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=400)
@given(steps=steps, limit=st.integers(0, 4))
def test_ledger_never_checkpoints_past_work_not_done(
    steps: list[tuple[str, int, bool]], limit: int
) -> None:
    """Against a model: every batch published and not done stays in the ledger; the
    checkpoint is the start of the oldest of them (else the end of what was read); an overdue
    batch is one without progress for the whole redelivery deadline."""
    redeliver_after = 30.0
    ledger = Ledger("t", at(0), 0, limit=limit, redeliver_after=redeliver_after)
    now, read = 0.0, 0
    pending: dict[int, tuple[int, float]] = {}  # seq -> (start position, last sign of life)
    progress: dict[int, int] = {}
    for kind, n, flag in steps:
        if kind == "read":
            start = read
            read += n
            if flag and not ledger.full:
                batch = ledger.publish(Batch(reason=f"to {read}"), now)
                pending[batch.seq] = (start, now)
            ledger.advance(at(read), read)
        elif kind == "done" and pending:
            seq = sorted(pending)[n % len(pending)]
            if flag:
                ledger.update({seq: BatchState(done=True)}, now)
                del pending[seq]
            else:
                progress[seq] = progress.get(seq, 0) + 1
                ledger.update({seq: BatchState(progress=progress[seq])}, now)
                pending[seq] = (pending[seq][0], now)
        elif kind == "wait":
            now += n
            late = {entry.batch.seq for entry in ledger.overdue(now)}
            expected = {s for s, (_, alive) in pending.items() if now - alive >= redeliver_after}
            assert late == expected
            for seq in late:
                pending[seq] = (pending[seq][0], now)
        assert set(ledger.entries) == set(pending)
        assert ledger.full == (0 < limit <= len(pending))
        position, _ = ledger.checkpoint()
        assert position is not None
        assert position == at(min(s for s, _ in pending.values()) if pending else read)
