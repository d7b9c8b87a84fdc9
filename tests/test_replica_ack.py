"""adapters.redis.replica_ack: a batch is done only once a replica has its deletes (WAIT), on a
primary with a replica, on each primary of a cluster; a missing replica degrades, a late
one holds the batch back."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from adapters.redis.replica_ack import ReplicaAck, ReplicasBehind
from tests.private_servers import PrivateRedis, ReplicationRelay
from tests.services import delete_prefix, unique, wait_for


def pair(tmp_path: Path) -> tuple[PrivateRedis, PrivateRedis, ReplicationRelay]:
    primary = PrivateRedis(tmp_path / "primary")
    primary.start()
    relay = ReplicationRelay(primary.port)
    replica = PrivateRedis(
        tmp_path / "replica", options=("--replicaof", "127.0.0.1", str(relay.port))
    )
    replica.start()
    wait_for(
        lambda: replica.client().info("replication").get("master_link_status") == "up",
        timeout=30,
        what="the replica linked",
    )
    return primary, replica, relay


def test_wait_confirms_late_and_missing_replicas(tmp_path: Path) -> None:
    primary, replica, relay = pair(tmp_path)
    try:
        client = primary.client()
        ack = ReplicaAck(client, "t:", wanted=1, timeout_ms=200)
        client.set("k", "v")
        assert ack.confirm() == 0  # the replica has it
        assert replica.client().get("k") == b"v"
        relay.freeze()  # connected, but gets nothing more
        client.delete("k")
        with pytest.raises(ReplicasBehind):
            ack.confirm()
        relay.drop()
        replica.stop()
        wait_for(
            lambda: client.info("replication")["connected_slaves"] == 0,
            timeout=90,
            what="the primary to see its replica gone",
        )
        assert ack.confirm() == 1  # none connected: done anyway, counted
        assert ReplicaAck(client, "t:", wanted=0, timeout_ms=200).confirm() == 0
    finally:
        relay.drop()
        replica.stop()
        primary.stop()


def test_wait_on_every_primary_of_a_cluster(cluster_client: redis.Redis) -> None:
    prefix = unique("ack") + ":"
    ack = ReplicaAck(cluster_client, prefix, wanted=1, timeout_ms=2000)
    try:
        assert ack.confirm() == 0  # each of the 3 primaries has its replica
        cluster = cluster_client
        markers = list(cluster.scan_iter(match=f"{prefix}*"))  # type: ignore[attr-defined]
        nodes = {cluster.get_node_from_key(key).name for key in markers}  # type: ignore[attr-defined]
        assert len(markers) == 3 and len(nodes) == 3
    finally:
        delete_prefix(cluster_client, prefix)
