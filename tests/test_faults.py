"""Nothing lost, nothing late: faults caused for real (SIGKILL, SIGSTOP, servers killed and
restarted), then every affected key must go and every unaffected key stay.

Each test prints a FAULT line (`pytest -s`): seconds from recovery to caught up, and the
completeness and precision figures. Servers a test kills or pauses are its own
(tests.private_servers); the shared ones are never touched.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from config.query import Query
from tests.private_servers import PrivateMariaDB, PrivateRabbitMQ, PrivateRedis
from tests.services import VENV_BIN, Process, revive, wait_for
from tests.sidecar import Sidecar, isolated
from tests.workload import Workload

REDELIVER_AFTER_S = 3  # the tests' listener.redeliver_after_s (default 30)
CATCH_UP_TIMEOUT = 90.0  # generous: five other test runs may share the machine


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def sidecar(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    client: redis.Redis,
    workdir: Path,
    **options: Any,
) -> Any:
    return isolated(
        Sidecar,
        services,
        mysql_params,
        client,
        workdir,
        redeliver_after_s=REDELIVER_AFTER_S,
        **options,
    )


def both_alive(car: Sidecar) -> None:
    assert car.listener is not None and car.listener.alive(), "the listener exited"
    assert car.worker is not None and car.worker.alive(), "the worker exited"


def pool_children(worker: Process) -> list[int]:
    """The PIDs of a Celery worker's pool processes (the children of its main process)."""
    pid = worker.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def stats(car: Sidecar) -> dict[str, int]:
    raw = car.redis.hgetall(f"{car.state_prefix}stats")
    return {k.decode(): int(v) for k, v in raw.items()}


# ---- a worker killed while it holds a batch ------------------------------------------------------


def test_worker_killed_holding_a_batch_is_published_again(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, workdir: Path
) -> None:
    with sidecar(services, mysql_params, redis_client, workdir) as car:
        car.start_worker()
        car.start_listener()
        work = Workload(car, random.Random(7))
        work.seed()
        # The pool process stops; the main process still takes the next message (prefetch 1)
        # and hands it on: the batch sits unacked in the Redis broker, which gives it back
        # only after its visibility timeout (600 s). The listener must not wait for that.
        worker = car.worker
        assert worker is not None
        for child in pool_children(worker):
            os.kill(child, signal.SIGSTOP)
        received = worker.output().count("Task primer_cache.invalidate")
        while work.affected() == set():
            work.change()
        wait_for(
            lambda: worker.output().count("Task primer_cache.invalidate") > received,
            timeout=30,
            what="the frozen worker to take a batch",
        )
        worker.kill()
        car.start_worker()
        back = time.monotonic()
        for _ in range(5):
            work.change()
        outcome = work.wait_complete("worker SIGKILLed holding a batch", back, 60)
        assert outcome.gone == outcome.affected
        listener = car.listener
        assert listener is not None and "publishing it again" in listener.output()
        assert stats(car).get("redeliveries", 0) >= 1
        both_alive(car)


# ---- chaos: listener and worker SIGKILLed at random points, per broker ---------------------------


def chaos(car: Sidecar, rng: random.Random, seconds: float, broker: str) -> None:
    car.start_worker()
    car.start_listener()
    work = Workload(car, rng)
    work.seed()
    kills: list[str] = []
    deadline = time.monotonic() + seconds
    next_kill = time.monotonic() + rng.uniform(1, 4)
    while time.monotonic() < deadline:
        work.change()
        if time.monotonic() >= next_kill:
            victims = rng.choice([["listener"], ["worker"], ["listener", "worker"]])
            kills += victims
            if "listener" in victims:
                car.listener.kill()  # type: ignore[union-attr]
            if "worker" in victims:
                car.worker.kill()  # type: ignore[union-attr]
            for _ in range(rng.randint(0, 8)):  # changes while they are down
                work.change()
            if "worker" in victims:
                car.start_worker()
            if "listener" in victims:
                car.start_listener()
            next_kill = time.monotonic() + rng.uniform(1.5, 4)
        time.sleep(rng.uniform(0, 0.15))  # pacing the workload, not waiting for anything
    back = time.monotonic()
    outcome = work.wait_complete(f"chaos on {broker}", back, CATCH_UP_TIMEOUT)
    print(
        f"  {work.changes} changes, SIGKILLs: {len(kills)} ({', '.join(kills)}), stats {stats(car)}"
    )
    assert kills and outcome.gone == outcome.affected
    both_alive(car)


def test_chaos_with_the_redis_broker(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, workdir: Path
) -> None:
    with sidecar(services, mysql_params, redis_client, workdir, second_pass_ms=250) as car:
        chaos(car, random.Random(11), 15, "redis")


def test_chaos_with_rabbitmq(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    workdir: Path,
    amqp_url: str,
) -> None:
    with sidecar(
        services, mysql_params, redis_client, workdir, second_pass_ms=250, broker_url=amqp_url
    ) as car:
        chaos(car, random.Random(12), 15, "rabbitmq")


# ---- server outages: no process exits, and afterwards nothing is missing ------------------------

OUTAGE_S = 10.0  # a server paused: as long as the clients' socket timeouts
# A server down (connections refused at once): past the lock's TTL and redeliver_after_s, the
# paths a longer outage takes; the test's length beyond that buys nothing.
DOWN_S = 5.0


@contextmanager
def running(server: PrivateRedis | PrivateMariaDB | PrivateRabbitMQ) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def changes_for(work: Workload, seconds: float) -> None:
    """Keep changing the primer tables for `seconds` (the length of an outage)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        work.change()
        time.sleep(0.2)  # pacing the workload, not waiting for anything


def started(car: Sidecar, seed: int) -> Workload:
    car.start_worker()
    car.start_listener()
    work = Workload(car, random.Random(seed))
    work.seed()
    for _ in range(5):
        work.change()
    return work


def test_cache_redis_paused(services: dict[str, str], mysql_params: dict, workdir: Path) -> None:
    with running(PrivateRedis(workdir / "cache")) as cache:
        env = {**services, "PRIMER_REDIS_URL": cache.url}
        with sidecar(env, mysql_params, cache.client(), workdir) as car:
            work = started(car, 21)
            cache.pause()
            try:
                changes_for(work, OUTAGE_S)
            finally:
                cache.resume()
            work.wait_complete("cache Redis SIGSTOPped 10 s", time.monotonic(), CATCH_UP_TIMEOUT)
            both_alive(car)


def test_cache_redis_killed_and_restarted(
    services: dict[str, str], mysql_params: dict, workdir: Path
) -> None:
    # Persistent (appendfsync always): it comes back with its keys and the checkpoint. (One
    # that comes back empty has lost the checkpoint: a cold start, which flushes.)
    with running(PrivateRedis(workdir / "cache", persistent=True)) as cache:
        env = {**services, "PRIMER_REDIS_URL": cache.url}
        with sidecar(env, mysql_params, cache.client(), workdir) as car:
            work = started(car, 22)
            cache.kill()
            changes_for(work, DOWN_S)
            cache.start()
            outcome = work.wait_complete(
                "cache Redis SIGKILLed, down 5 s", time.monotonic(), CATCH_UP_TIMEOUT
            )
            assert outcome.gone == outcome.affected
            both_alive(car)


def test_broker_down_then_restarted_empty(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, workdir: Path
) -> None:
    with (
        running(PrivateRedis(workdir / "broker")) as broker,
        sidecar(services, mysql_params, redis_client, workdir, broker_url=broker.url) as car,
    ):
        work = started(car, 23)
        broker.kill()
        changes_for(work, DOWN_S)
        broker.start()  # empty: whatever was queued is gone
        work.wait_complete(
            "broker Redis SIGKILLed, down 5 s, back empty", time.monotonic(), CATCH_UP_TIMEOUT
        )
        both_alive(car)


def test_rabbitmq_down_then_restarted_empty(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, workdir: Path
) -> None:
    with (
        running(PrivateRabbitMQ(workdir / "rabbitmq")) as broker,
        sidecar(services, mysql_params, redis_client, workdir, broker_url=broker.url) as car,
    ):
        work = started(car, 28)
        broker.kill()
        changes_for(work, DOWN_S)
        broker.wipe()
        broker.start()  # empty: no queues, no messages
        work.wait_complete(
            "RabbitMQ SIGKILLed, down 5 s, back empty", time.monotonic(), CATCH_UP_TIMEOUT
        )
        both_alive(car)


def test_frozen_worker_while_the_broker_restarts_empty(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, workdir: Path
) -> None:
    with (
        running(PrivateRedis(workdir / "broker")) as broker,
        sidecar(services, mysql_params, redis_client, workdir, broker_url=broker.url) as car,
    ):
        work = started(car, 24)
        worker = car.worker
        assert worker is not None
        os.killpg(worker.proc.pid, signal.SIGSTOP)
        try:
            queue = broker.client()
            for _ in range(20):
                work.change()
            wait_for(
                lambda: queue.llen(f"{car.tag}.invalidate") > 0,
                timeout=30,
                what="batches to queue up for the frozen worker",
            )
            broker.kill()
            broker.start()  # empty: the queued batches are gone
        finally:
            os.killpg(worker.proc.pid, signal.SIGCONT)
        for _ in range(3):
            work.change()
        work.wait_complete(
            "worker SIGSTOPped, broker restarted empty", time.monotonic(), CATCH_UP_TIMEOUT
        )
        both_alive(car)


def test_mariadb_paused_then_restarted(
    services: dict[str, str], redis_client: redis.Redis, workdir: Path
) -> None:
    with running(PrivateMariaDB(workdir / "mariadb")) as db:
        env = {**services, "PRIMER_MYSQL_URL": db.url}
        with sidecar(env, db.params, redis_client, workdir) as car:
            work = started(car, 25)
            db.pause()
            try:
                time.sleep(OUTAGE_S)  # the outage itself
            finally:
                db.resume()
            changes_for(work, 2)
            db.kill()
            db.start()
            revive(car.conn)
            for _ in range(5):
                work.change()
            work.wait_complete(
                "MariaDB SIGSTOPped 10 s, then SIGKILLed and restarted",
                time.monotonic(),
                CATCH_UP_TIMEOUT,
            )
            both_alive(car)


def test_an_evicting_cache_redis_loses_the_checkpoint_to_a_flush(
    services: dict[str, str], mysql_params: dict, workdir: Path
) -> None:
    """The primer server's Redis runs allkeys-lru: under memory pressure it evicts the
    sidecar's own keys too. An evicted checkpoint must end in a flush, never in a resume
    from nowhere (or a stale key)."""
    lru = ("--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru")
    with running(PrivateRedis(workdir / "cache", options=lru)) as cache:
        env = {**services, "PRIMER_REDIS_URL": cache.url}
        client = cache.client()
        with sidecar(env, mysql_params, client, workdir) as car:
            work = started(car, 27)
            car.checkpointed()
            car.kill_listener()  # a stopped listener writes no new checkpoint meanwhile
            checkpoint = f"{car.state_prefix}*checkpoint*"

            def checkpoint_evicted() -> bool:
                # SCAN, not GET: a read would make the checkpoint recently used
                return not list(client.scan_iter(match=checkpoint))

            filler = (b"x" * 10_000,)
            for n in range(5_000):  # 50 MB at most into an 8 MB Redis
                client.set(f"{car.tag}:junk:{n}", filler[0])
                if n % 50 == 0 and checkpoint_evicted():
                    break
            assert checkpoint_evicted(), "filling the cache did not evict the checkpoint"
            for _ in range(5):
                work.change()
            back = time.monotonic()
            car.start_listener()
            listener = car.listener
            assert listener is not None
            wait_for(lambda: "COLD START" in listener.output(), timeout=30, what="a cold start")
            outcome = work.wait_complete(
                "cache Redis (allkeys-lru) evicted the checkpoint",
                back,
                CATCH_UP_TIMEOUT,
                precise=False,  # a flush: every key goes, affected or not
            )
            assert outcome.gone == outcome.affected
            both_alive(car)


# ---- a batch the task cannot process -------------------------------------------------------------


def test_a_batch_that_fails_falls_back_to_a_flush(
    services: dict[str, str], mysql_params: dict, redis_client: redis.Redis, workdir: Path
) -> None:
    with sidecar(services, mysql_params, redis_client, workdir) as car:
        work = started(car, 26)
        car.checkpointed()
        # A batch of a (made-up) listener term whose image holds a priority that is no number.
        bad = {"images": [{"c": "security", "p": "high", "l": "required"}], "term": "x.1", "seq": 1}
        sent = subprocess.run(
            [
                str(VENV_BIN / "celery"),
                "-A",
                "tasks",
                "call",
                "primer_cache.invalidate",
                "--args",
                json.dumps([bad]),
                "--queue",
                f"{car.tag}.invalidate",
            ],
            env=car.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: not car.present(work.keys), timeout=30, what="the fallback flush")
        worker = car.worker
        assert worker is not None
        assert "FLUSHING every primer key instead" in worker.output()
        assert "ERROR" in worker.output()
        # counted once the flush has run, a moment after the keys are gone
        wait_for(lambda: "fallback_flushes" in stats(car), timeout=30, what="the flush counted")
        counts = stats(car)
        assert counts["fallback_flushes"] == 1 and counts["fallback_flushes:InvalidOperation"] == 1
        done = car.redis.hget(f"{car.state_prefix}completion:x.1", "d1")
        assert done is not None, "the failed batch was not reported done"
        # ... and the pipeline goes on
        keys = car.plant(Query(("security",)), Query(("zzother",)))
        car.insert_chunk(f"after-{car.tag}", "security", "0.50", "required")
        car.sync()
        assert car.present(keys) == {keys[1]}
        both_alive(car)
