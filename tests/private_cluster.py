"""A small Redis Cluster of a test's own, for tests that kill its nodes (the shared 6-node
cluster that scripts/services.sh starts is never touched): primaries sharing the slots,
replicas made with CLUSTER REPLICATE. A node may announce another port than its own (a
ReplicationRelay's), so that its replica, and clients, reach it through the relay."""

from __future__ import annotations

from typing import Any

import redis

from tests.private_servers import PrivateRedis, free_port
from tests.services import wait_for

SLOTS = 16384


class ClusterNode(PrivateRedis):
    """A redis-server with cluster mode on; its bus on a port of its own (`cluster-port`)."""

    name = "cluster-node"

    def __init__(self, workdir: Any, announce_port: int | None = None) -> None:
        super().__init__(workdir)
        self.bus_port = free_port()
        self.announce_port = announce_port  # the port the cluster and its clients are told

    def command(self) -> list[str]:
        cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.dir / "nodes.conf"),
            "--cluster-node-timeout",
            "2000",
            "--cluster-port",
            str(self.bus_port),
            # a replica's first sync starts at once (not after the 5 s wait for other replicas)
            "--repl-diskless-sync-delay",
            "0",
        ]
        if self.announce_port is not None:
            cluster += [
                "--cluster-announce-ip",
                "127.0.0.1",
                "--cluster-announce-port",
                str(self.announce_port),
                "--cluster-announce-bus-port",
                str(self.bus_port),
            ]
        return [*super().command(), *cluster]

    def cluster(self, *args: Any) -> Any:
        return self.client().execute_command("CLUSTER", *args)

    def node_id(self) -> str:
        return str(self.cluster("MYID").decode())

    def nodes(self) -> list[list[str]]:
        """Its CLUSTER NODES, one row of fields per node."""
        return [line.split() for line in self.cluster("NODES").decode().splitlines()]

    def state_ok(self) -> bool:
        return bool(self.client().cluster("info")["cluster_state"] == "ok")


def form_cluster(primaries: list[ClusterNode], replicas: dict[ClusterNode, ClusterNode]) -> None:
    """Make started nodes one cluster: the slots split evenly over `primaries`, each of
    `replicas` (replica -> its primary) replicating its primary; returns once every node says
    cluster_state:ok and every replica's link is up."""
    for i, primary in enumerate(primaries):
        primary.cluster(
            "ADDSLOTSRANGE", SLOTS * i // len(primaries), SLOTS * (i + 1) // len(primaries) - 1
        )
    everyone = [*primaries, *replicas]
    for i, node in enumerate(everyone):  # each pair met directly: quicker than gossip
        for other in everyone[i + 1 :]:
            node.cluster("MEET", "127.0.0.1", other.port, other.bus_port)

    def all_known() -> bool:
        return all(
            len(rows) == len(everyone) and not any("handshake" in row[2] for row in rows)
            for rows in (node.nodes() for node in everyone)
        )

    wait_for(all_known, timeout=30, what="the cluster's nodes to know each other")
    for replica, primary in replicas.items():
        replica.cluster("REPLICATE", primary.node_id())
    wait_for(
        lambda: all(
            r.client().info("replication").get("master_link_status") == "up" for r in replicas
        ),
        timeout=30,
        what="the replicas linked",
    )
    wait_for(lambda: all(n.state_ok() for n in everyone), timeout=30, what="cluster_state:ok")


def caught_up(primary: redis.Redis, replica: redis.Redis) -> bool:
    """Whether `replica` has processed everything `primary` has sent it."""
    sent = int(primary.info("replication")["master_repl_offset"])
    got = int(replica.info("replication").get("slave_repl_offset", -1))
    return got >= sent
