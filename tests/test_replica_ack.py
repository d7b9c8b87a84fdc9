"""adapters.redis.replica_ack: a batch is done only once a replica has its deletes (WAIT), on a
primary with a replica, on each primary of a cluster; a missing replica degrades, a late
one holds the batch back; by default a cluster primary without a replica costs nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from adapters.redis.connection import connect_redis
from adapters.redis.replica_ack import ReplicaAck, ReplicasBehind
from tests.private_cluster import ClusterNode, form_cluster
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


def test_the_cluster_default_waits_only_where_a_replica_is_configured(tmp_path: Path) -> None:
    """cache.wait_replicas not set, on a cluster: a primary with a replica configured waits
    for it, and is counted short while that replica is down; a primary without one gets no
    marker and no WAIT, and is never counted. A number set explicitly wins."""
    paired, alone, replica = (ClusterNode(tmp_path / name) for name in ("a", "b", "r"))
    for node in (paired, alone, replica):
        node.start()
    try:
        form_cluster([paired, alone], {replica: paired})
        client = connect_redis(alone.url)
        ack = ReplicaAck(client, "t:", wanted=None, timeout_ms=200)
        assert ack.confirm() == 0
        markers = list(client.scan_iter(match="t:*"))
        assert [client.get_node_from_key(key).name for key in markers] == [  # type: ignore[attr-defined]
            f"127.0.0.1:{paired.port}"
        ]
        assert "cmdstat_wait" not in alone.client().info("commandstats")
        replica.stop()
        wait_for(
            lambda: paired.client().info("replication")["connected_slaves"] == 0,
            timeout=30,
            what="the primary to see its replica gone",
        )
        # still configured (CLUSTER NODES lists it, down): short, counted; the other is not
        assert ReplicaAck(client, "t:", wanted=None, timeout_ms=200).confirm() == 1
        assert ReplicaAck(client, "t:", wanted=0, timeout_ms=200).confirm() == 0
        assert ReplicaAck(client, "t:", wanted=1, timeout_ms=200).confirm() == 2
    finally:
        for node in (paired, alone, replica):
            node.stop()
