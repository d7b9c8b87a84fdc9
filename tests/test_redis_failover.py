"""Cache Redis failover under Redis Sentinel (issue 21 item 4): no delete is lost when the
primary is SIGKILLed and its replica promoted.

The test's own primary, replica and three sentinels (tests.private_servers.SentinelGroup);
the sidecar's cache URL is redis+sentinel://. The replication stream is held back (a relay
frozen between primary and replica) while changes are invalidated, so the deletes reach the
primary but not the replica; the listener is frozen across the failover and keeps its lock,
so it does not reload an older checkpoint from the new primary (which would replay the
batches). Only `WAIT` (adapters.redis.replica_ack) then keeps those batches from being done, and
their retries delete the keys again on the promoted replica.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import redis

from adapters.redis.connection import connect_redis
from tests.private_servers import SentinelGroup, following
from tests.services import wait_for
from tests.sidecar import Sidecar, isolated
from tests.workload import Workload

CATCH_UP_TIMEOUT = 90.0


def test_a_delete_just_before_a_sentinel_failover_is_not_undone(
    services: dict[str, str], mysql_params: dict, tmp_path: Path
) -> None:
    group = SentinelGroup(tmp_path / "redis")
    group.start()
    try:
        env = {**services, "PRIMER_REDIS_URL": group.url}
        client = following(group.url)
        with isolated(
            Sidecar,
            env,
            mysql_params,
            client,
            tmp_path,
            redeliver_after_s=5,
            # A lock that outlives the whole failover: the listener keeps leading through it,
            # with its in-memory ledger, rather than losing the lock (expired on the paused
            # replica) and reloading an older checkpoint from the new primary, which would
            # replay the batches and hide a lost delete.
            leader_ttl_ms=60_000,
            cache_toml="wait_timeout_ms = 200\n",
        ) as car:
            assert car.settings.cache.wait_replicas == 1  # the default with a sentinel URL
            car.start_worker()
            listener = car.start_listener()
            work = Workload(car, random.Random(41))
            work.seed()
            primary = group.primary.client()
            wait_for(group.replica_caught_up, timeout=30, what="the replica to have the keys")
            group.relay.freeze()  # deletes from now on reach the primary only
            try:
                for _ in range(10):
                    work.change()
                doomed = sorted(work.affected())
                wait_for(
                    lambda: not any(primary.exists(key) for key in doomed),
                    timeout=CATCH_UP_TIMEOUT,
                    what="the affected keys gone on the primary",
                )
                # The listener has seen the batches done (its checkpoint passed them: what
                # happens without WAIT), or the worker is holding them back for the replica.
                car.done_or_held_for_replicas(timeout=CATCH_UP_TIMEOUT)
                os.killpg(listener.proc.pid, signal.SIGSTOP)
                try:
                    group.primary.kill()
                    group.relay.drop()  # what the replica never got is gone with it
                    wait_for(
                        lambda: group.primary_port() == group.replica.port,
                        timeout=60,
                        what="the sentinels to promote the replica",
                    )
                finally:
                    os.killpg(listener.proc.pid, signal.SIGCONT)
            finally:
                group.relay.drop()
            # Changes go on after the failover, too.
            for _ in range(5):
                work.change()
            work.wait_complete(
                "cache Redis primary SIGKILLed, replica promoted", time.monotonic(), 90.0
            )
            assert listener.alive()
    finally:
        group.stop()


def test_a_sentinel_url_reaches_the_primary(tmp_path: Path) -> None:
    group = SentinelGroup(tmp_path / "redis")
    group.start()
    try:
        client = connect_redis(group.url, socket_timeout=5)
        client.set("k", "v")
        assert group.primary.client().get("k") == b"v"
        replica: redis.Redis = group.replica.client()
        wait_for(lambda: replica.get("k") == b"v", timeout=10, what="the write replicated")
    finally:
        group.stop()


def test_a_sentinel_broker_carries_the_batches(
    services: dict[str, str], mysql_params: dict, tmp_path: Path
) -> None:
    """The broker, too, found through the sentinels (kombu's sentinel transport)."""
    group = SentinelGroup(tmp_path / "redis")
    group.start()
    try:
        env = {**services, "PRIMER_REDIS_URL": group.url}
        broker = group.url.rsplit("/", 1)[0] + "/1"
        client = following(group.url)
        with isolated(Sidecar, env, mysql_params, client, tmp_path, broker_url=broker) as car:
            assert car.settings.celery.broker_url == broker
            car.start_worker()
            car.start_listener()
            car.sync()
            assert car.worker is not None and "sentinel://" in car.worker.output()
    finally:
        group.stop()
