"""Deletes that survive a failover of the cache Redis: before a batch is reported done, its
deletes must be on a replica (Redis `WAIT`), or a failover to a replica that had not received
them brings the deleted keys back with nobody left to delete them again.

`WAIT n timeout` waits for the writes of *the connection it is sent on*. The deletes went out
on other connections (the pool's, the sweep's per-node clients); they were acknowledged
before we get here, and replication is one ordered stream per primary, so one marker write
on a connection, followed by `WAIT` on that same connection (a pipeline), covers every write
the primary acknowledged before the marker. On a cluster, each primary gets its own marker
(a key in one of its slots) and its own `WAIT`.

When fewer replicas acknowledge than asked: if fewer are connected to that primary than asked
(a replica down or resyncing), the batch is done anyway, logged and counted: the replica gets
the deletes when it reconnects (partial or full resync), and stalling every invalidation
behind a missing replica would serve stale answers for new changes. If enough are connected
but late, ReplicasBehind (a redis.TimeoutError, so the task retries): the batch is not done,
the listener keeps its checkpoint behind it, and the retry sweeps again.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.cluster import RedisCluster

from adapters.redis.connection import is_cluster

log = logging.getLogger(__name__)


class ReplicasBehind(redis.TimeoutError):
    """Raised when connected replicas did not acknowledge a batch's deletes in time."""


class ReplicaAck:
    def __init__(self, client: redis.Redis, state_prefix: str, wanted: int, timeout_ms: int):
        self.client = client
        self.state_prefix = state_prefix
        self.wanted = wanted
        self.timeout_ms = timeout_ms
        self._markers: dict[str, str] = {}  # cluster node name -> a marker key in its slots

    def confirm(self) -> int:
        """Wait until `wanted` replicas of every primary have everything written so far.
        Returns how many primaries had fewer replicas connected than wanted (done anyway);
        raises ReplicasBehind when connected replicas are late."""
        if self.wanted <= 0:
            return 0
        if not is_cluster(self.client):
            return self._confirm(self.client, f"{self.state_prefix}replica-ack", "primary")
        cluster: Any = self.client
        short = 0
        for node in cluster.get_primaries():
            key = self._marker(cluster, node)
            short += self._confirm(cluster.get_redis_connection(node), key, node.name)
        return short

    def _confirm(self, client: redis.Redis, marker: str, where: str) -> int:
        pipe = client.pipeline(transaction=False)
        pipe.incr(marker)
        pipe.expire(marker, 3600)
        pipe.execute_command("WAIT", self.wanted, self.timeout_ms)
        acked = int(pipe.execute()[-1])
        if acked >= self.wanted:
            return 0
        connected = int(client.info("replication").get("connected_slaves", 0))
        if connected < self.wanted and acked >= connected:
            log.warning(
                "cache Redis %s has %d replica(s) connected, %d wanted: batch done without "
                "that many copies of its deletes",
                where,
                connected,
                self.wanted,
            )
            return 1
        raise ReplicasBehind(
            f"cache Redis {where}: {acked} of {connected} connected replicas acknowledged the "
            f"deletes within {self.timeout_ms} ms ({self.wanted} wanted)"
        )

    def _marker(self, cluster: RedisCluster, node: Any) -> str:
        """A key of the state prefix whose slot `node` serves (found once per node)."""
        known = self._markers.get(node.name)
        if known is not None and cluster.get_node_from_key(known).name == node.name:
            return known
        for n in range(100_000):
            key = f"{self.state_prefix}replica-ack:{{{n}}}"
            if cluster.get_node_from_key(key).name == node.name:
                self._markers[node.name] = key
                return key
        raise RuntimeError(f"no key found in the slots of {node.name}")  # pragma: no cover
