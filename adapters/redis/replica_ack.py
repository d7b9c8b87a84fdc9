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

`wanted` None is the default (cache.wait_replicas not set): on a cluster, 1 for each primary
that has a replica configured, 0 (no marker, no WAIT, nothing logged) for one that has none,
as the cluster's own topology says (CLUSTER NODES, asked of each primary at most every
TOPOLOGY_TTL_S): it lists a replica that is down too, so a primary whose replica is down still
waits and is counted short, while a cluster built without replicas costs one CLUSTER NODES
per primary per TOPOLOGY_TTL_S. A single Redis gets 0 by default (a redis+sentinel:// URL
sets 1 in the settings). A number set explicitly applies to every primary.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from redis.cluster import RedisCluster

from adapters.redis.connection import is_cluster

log = logging.getLogger(__name__)

# How long a primary's count of configured replicas is trusted (the default wanted): a replica
# added to a cluster is waited for within this long.
TOPOLOGY_TTL_S = 10.0


class ReplicasBehind(redis.TimeoutError):
    """Raised when connected replicas did not acknowledge a batch's deletes in time."""


class ReplicaAck:
    def __init__(self, client: redis.Redis, state_prefix: str, wanted: int | None, timeout_ms: int):
        self.client = client
        self.state_prefix = state_prefix
        self.wanted = wanted  # None: the default (module docstring)
        self.timeout_ms = timeout_ms
        self._markers: dict[str, str] = {}  # cluster node name -> a marker key in its slots
        # cluster node name -> (replicas it has configured, when that was read)
        self._configured: dict[str, tuple[int, float]] = {}

    def confirm(self) -> int:
        """Wait until the wanted replicas of every primary have everything written so far.
        Returns how many primaries had fewer replicas connected than wanted (done anyway);
        raises ReplicasBehind when connected replicas are late."""
        if not is_cluster(self.client):
            wanted = self.wanted or 0
            if wanted <= 0:
                return 0
            return self._confirm(self.client, f"{self.state_prefix}replica-ack", "primary", wanted)
        cluster: Any = self.client
        short = 0
        for node in cluster.get_primaries():
            wanted = self._wanted_of(cluster, node)
            if wanted <= 0:
                continue
            key = self._marker(cluster, node)
            short += self._confirm(cluster.get_redis_connection(node), key, node.name, wanted)
        return short

    def _wanted_of(self, cluster: RedisCluster, node: Any) -> int:
        """How many replicas a cluster primary must have the deletes on."""
        if self.wanted is not None:
            return self.wanted
        known = self._configured.get(node.name)
        if known is None or time.monotonic() - known[1] > TOPOLOGY_TTL_S:
            count = configured_replicas(cluster.get_redis_connection(node))
            known = (count, time.monotonic())
            self._configured[node.name] = known
        return min(known[0], 1)

    def _confirm(self, client: redis.Redis, marker: str, where: str, wanted: int) -> int:
        pipe = client.pipeline(transaction=False)
        pipe.incr(marker)
        pipe.expire(marker, 3600)
        pipe.execute_command("WAIT", wanted, self.timeout_ms)
        acked = int(pipe.execute()[-1])
        if acked >= wanted:
            return 0
        connected = int(client.info("replication").get("connected_slaves", 0))
        if connected < wanted and acked >= connected:
            log.warning(
                "cache Redis %s has %d replica(s) connected, %d wanted: batch done without "
                "that many copies of its deletes",
                where,
                connected,
                wanted,
            )
            return 1
        raise ReplicasBehind(
            f"cache Redis {where}: {acked} of {connected} connected replicas acknowledged the "
            f"deletes within {self.timeout_ms} ms ({wanted} wanted)"
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


def configured_replicas(node: redis.Redis) -> int:
    """How many replicas the cluster node `node` (a primary) has configured, as its own CLUSTER
    NODES lists them: connected or not (a replica marked fail still counts)."""
    try:
        raw = node.execute_command("CLUSTER", "NODES")
    except redis.exceptions.NoPermissionError:
        # An ACL without CLUSTER NODES: the safe side, wait for one (a primary without a
        # replica is then counted short every batch; setting cache.wait_replicas says which).
        log.warning("cannot read the cluster's replicas (ACL): waiting for one per primary")
        return 1
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    rows = [line.split() for line in text.splitlines()]
    me = next((row[0] for row in rows if len(row) > 2 and "myself" in row[2].split(",")), None)
    return sum(1 for row in rows if len(row) > 3 and row[3] == me and "slave" in row[2].split(","))
