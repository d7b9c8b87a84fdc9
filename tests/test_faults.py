"""Nothing lost, nothing late: faults caused for real (SIGKILL, SIGSTOP, servers killed and
restarted), then every affected key must go and every unaffected key stay.

Each test prints a FAULT line (`pytest -s`): seconds from recovery to caught up, and the
completeness and precision figures. Servers a test kills or pauses are its own
(tests.private_servers); the shared ones are never touched.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.services import Process, wait_for
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
            next_kill = time.monotonic() + rng.uniform(2, 6)
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
        chaos(car, random.Random(11), 25, "redis")


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
        chaos(car, random.Random(12), 25, "rabbitmq")
