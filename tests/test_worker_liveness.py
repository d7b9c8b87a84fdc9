"""A dead worker is noticed in about a second, on both brokers: the batch it held is published
again as soon as its heartbeat is gone (adapters.redis.liveness), not after
`listener.redeliver_after_s`, which these tests set far beyond their deadline."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.redis.completion import BatchState
from config.query import Query
from core.batch import Batch
from core.position import GtidPosition
from tests.services import Process, wait_for
from tests.sidecar import Sidecar, isolated
from worker.ledger import Ledger

REDELIVER_AFTER_S = 60  # the backstop: a test that waited for it would fail its deadline
DEADLINE_S = 10.0  # "within a few seconds" with room for a loaded machine; far below 60


def pool_children(worker: Process) -> list[int]:
    pid = worker.proc.pid
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def received(worker: Process) -> int:
    return worker.output().count("Task primer_cache.invalidate")


@pytest.mark.parametrize(
    ("broker", "fault"),
    [
        ("redis", "SIGKILL"),
        ("rabbitmq", "SIGKILL"),
        # A host that vanished: its connections stay open (RabbitMQ would requeue only once
        # its heartbeat timed out, minutes later); SIGSTOP of the whole worker stands for it.
        ("rabbitmq", "SIGSTOP"),
    ],
)
def test_a_batch_whose_worker_died_is_published_again_within_seconds(
    broker: str,
    fault: str,
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    broker_url = request.getfixturevalue("amqp_url") if broker == "rabbitmq" else ""
    with isolated(
        Sidecar,
        services,
        mysql_params,
        redis_client,
        tmp_path,
        broker_url=broker_url,
        redeliver_after_s=REDELIVER_AFTER_S,
    ) as car:
        first = car.start_worker(name=f"{car.tag}a")
        listener = car.start_listener()
        car.sync()
        car.checkpointed()  # the cold-start flush is done: nothing but the batch removes the key
        (key,) = car.plant(Query(("orphan",)))
        # The pool process stops; the main process still receives the next batch (prefetch 1)
        # and holds it, unacked, for a child that never starts it.
        for child in pool_children(first):
            os.kill(child, signal.SIGSTOP)
        seen = received(first)
        car.insert_chunk("o1", "orphan")
        wait_for(lambda: received(first) > seen, timeout=30, what="the worker to receive the batch")
        try:
            if fault == "SIGKILL":
                first.kill()
            else:
                os.killpg(first.proc.pid, signal.SIGSTOP)
            died = time.monotonic()
            car.start_worker(name=f"{car.tag}b")
            wait_for(
                lambda: not car.present([key]),
                timeout=DEADLINE_S,
                what=f"{key}: the batch of the {fault}ed worker on {broker} published again",
            )
            print(f"\nWORKER {fault} on {broker}: gone {time.monotonic() - died:.2f} s after")
            if broker == "redis":
                # (RabbitMQ requeues a SIGKILLed consumer's message itself; either way.)
                assert "is dead: publishing it again" in listener.output()
        finally:
            first.kill()  # SIGKILL ends a stopped process too
        assert listener.alive()


# ---- the ledger's part (pure) ----------------------------------------------------------------


def test_a_batch_is_published_again_once_per_dead_holder() -> None:
    ledger = Ledger("t.1", GtidPosition("0-1-1"), 0, limit=0, redeliver_after=60)
    one = ledger.publish(Batch(upto="a"), now=0)
    two = ledger.publish(Batch(upto="b"), now=0)
    three = ledger.publish(Batch(upto="c"), now=0)
    ledger.update(
        {
            one.seq: BatchState(holder="w1"),
            two.seq: BatchState(holder="w2"),
            three.seq: BatchState(),
        },
        now=1,
    )
    assert ledger.holders() == {"w1", "w2"}
    assert ledger.orphaned({"w1", "w2"}, now=1) == []  # alive: nothing, however slow
    (lost,) = ledger.orphaned({"w2"}, now=2)  # w1 died
    assert lost.batch.seq == one.seq and lost.deliveries == 2 and lost.due == 62
    assert ledger.orphaned({"w2"}, now=3) == []  # once for w1, not at every look
    assert ledger.holders() == {"w2"}
    ledger.update({one.seq: BatchState(holder="w3")}, now=4)  # received again, by w3 ...
    (again,) = ledger.orphaned(set(), now=5)[:1]  # ... which died too (as did w2)
    assert again.batch.seq == one.seq and again.deliveries == 3
    ledger.update({one.seq: BatchState(done=True)}, now=6)
    assert ledger.holders() == set()


holder_steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(0, 0)),
        st.tuples(st.just("receive"), st.integers(0, 40)),  # a worker receives a batch
        st.tuples(st.just("die"), st.integers(0, 3)),  # worker n dies
        st.tuples(st.just("done"), st.integers(0, 40)),
        st.tuples(st.just("look"), st.integers(0, 0)),  # the leader looks at the heartbeats
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(steps=holder_steps)
def test_orphans_against_a_model(steps: list[tuple[str, int]]) -> None:
    """A batch is published again exactly when the last worker that received it is dead and
    it was not already published again for that worker; never for a live one, never once
    done."""
    ledger = Ledger("t", GtidPosition("0-1-1"), 0, limit=0, redeliver_after=1e9)
    holder: dict[int, str] = {}  # not-done seq -> its last holder
    answered: dict[int, str] = {}  # seq -> the dead holder it was published again for
    dead: set[str] = set()
    workers = [f"w{n}" for n in range(4)]
    generation = 0
    for kind, n in steps:
        if kind == "publish":
            batch = ledger.publish(Batch(), now=0)
            holder[batch.seq] = ""
        elif kind == "receive" and holder:
            seq = sorted(holder)[n % len(holder)]
            live = [w for w in workers if w not in dead]
            if live:
                generation += 1
                holder[seq] = live[generation % len(live)]
                ledger.update({seq: BatchState(holder=holder[seq])}, now=0)
        elif kind == "die":
            dead.add(workers[n])
        elif kind == "done" and holder:
            seq = sorted(holder)[n % len(holder)]
            ledger.update({seq: BatchState(done=True)}, now=0)
            del holder[seq]
            answered.pop(seq, None)
        elif kind == "look":
            alive = {h for h in ledger.holders() if h not in dead}
            got = {entry.batch.seq for entry in ledger.orphaned(alive, now=0)}
            expected = {
                seq for seq, h in holder.items() if h and h in dead and answered.get(seq) != h
            }
            assert got == expected
            for seq in got:
                answered[seq] = holder[seq]
        assert ledger.holders() == {h for seq, h in holder.items() if h and answered.get(seq) != h}
