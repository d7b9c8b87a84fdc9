"""Cache Redis failover on a Redis Cluster (issue 21 item 4): a primary SIGKILLed and its
replica taking over loses no delete by default, since a batch is done only once the replica
acknowledged its deletes (cache.wait_replicas, on by default for a cluster primary with a
replica); with wait_replicas = 0 the same failover brings the deleted keys back for good.

The test's own two-node cluster (tests.private_cluster): a primary serving every slot and its
replica. The primary announces a relay's port, so its replica and the clients reach it
through a ReplicationRelay that can freeze the replication link alone: the deletes then
reach the primary but not the replica. The listener is frozen across the failover and keeps
its lock (as in tests/test_redis_failover.py), so it does not reload an older checkpoint from
the new primary, which would replay the batches and hide a lost delete. The sidecar's URL
names the replica, which outlives the primary.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.private_cluster import ClusterNode, caught_up, form_cluster
from tests.private_servers import ReplicationRelay, following
from tests.services import wait_for
from tests.sidecar import Sidecar, isolated
from tests.workload import Workload


@pytest.mark.parametrize("wait_replicas", [None, 0], ids=["default", "off"])
def test_a_delete_just_before_a_cluster_failover(
    services: dict[str, str], mysql_params: dict, tmp_path: Path, wait_replicas: int | None
) -> None:
    primary = ClusterNode(tmp_path / "primary")
    relay = ReplicationRelay(primary.port, only_replication=True)
    primary.announce_port = relay.port
    replica = ClusterNode(tmp_path / "replica")
    try:
        primary.start()
        replica.start()
        form_cluster([primary], {replica: primary})
        env = {**services, "PRIMER_REDIS_URL": replica.url}
        off = "" if wait_replicas is None else f"wait_replicas = {wait_replicas}\n"
        with isolated(
            Sidecar,
            env,
            mysql_params,
            following(replica.url),
            tmp_path,
            redeliver_after_s=5,
            leader_ttl_ms=60_000,  # the listener leads through the failover (module docstring)
            cache_toml="wait_timeout_ms = 200\n" + off,
        ) as car:
            assert car.settings.cache.wait_replicas == wait_replicas
            car.start_worker()
            listener = car.start_listener()
            work = Workload(car, random.Random(43))
            work.seed()
            old, new = primary.client(), replica.client()
            wait_for(lambda: caught_up(old, new), timeout=30, what="the replica to have the keys")
            relay.freeze()  # deletes from now on reach the primary only
            for _ in range(10):
                work.change()
            doomed = sorted(work.affected())
            wait_for(
                lambda: any(not old.exists(key) for key in doomed),
                timeout=30,
                what="affected keys gone on the primary",
            )
            # Without WAIT the batches are done (the checkpoint passes them); with it the
            # worker holds them back for the replica.
            car.done_or_held_for_replicas(timeout=30)
            os.killpg(listener.proc.pid, signal.SIGSTOP)
            try:
                primary.kill()
                relay.drop()  # what the replica never got is gone with the primary
                new.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
                wait_for(
                    lambda: new.info("replication")["role"] == "master" and replica.state_ok(),
                    timeout=30,
                    what="the replica to take over",
                )
            finally:
                os.killpg(listener.proc.pid, signal.SIGCONT)
            since = time.monotonic()
            # the test's own client knew the primary by the relay's port only
            car.redis = following(replica.url)
            for _ in range(5):  # changes go on after the failover, too
                work.change()
            if wait_replicas == 0:
                car.sync()  # every batch done, on the new primary
                back = work.stale(doomed)
                assert back, "no deleted key came back: the test no longer loses a delete"
                print(f"wait_replicas = 0: {len(back)} of {len(doomed)} deleted keys back")
            else:
                work.wait_complete("cluster primary SIGKILLed, replica took over", since, 60.0)
            assert listener.alive()
    finally:
        relay.drop()
        replica.stop()
        primary.stop()
