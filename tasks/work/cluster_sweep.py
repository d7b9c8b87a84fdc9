"""A sweep of a Redis Cluster: every primary scanned concurrently (one thread each: the work is
network-bound), and scanned again in full wherever a node failed or a slot changed hands while
the sweep ran (a failover never makes it skip keys)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from redis.cluster import RedisCluster

from tasks.work.sweep_result import SweepResult

log = logging.getLogger(__name__)

# Faults of one node during a sweep (failover, a primary gone): that node's slots are re-scanned.
NODE_FAULTS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
)
MAX_ROUNDS = 10  # topology still moving after this many re-scans: fail, the task is retried
TOPOLOGY_WAIT = 30.0  # how long to wait for the cluster to agree on its slots again

NodeSweep = Callable[[redis.Redis], SweepResult]


class SweepIncomplete(redis.ConnectionError):
    """Raised when a cluster's topology kept changing through MAX_ROUNDS re-scans; a
    ConnectionError, so the invalidate task retries the whole batch."""


def sweep_cluster(client: RedisCluster, sweep_node: NodeSweep) -> SweepResult:
    result = SweepResult()
    before = _slot_owners(client, refresh=False)  # the map the client routes by
    todo = set(before.values())
    for _round in range(MAX_ROUNDS):
        failed = _sweep_nodes(client, sorted(todo), sweep_node, result)
        now = _slot_owners(client, refresh=True)
        # Slots whose node failed, or whose primary changed while we scanned (a scan may have
        # read a node being demoted, a delete reached a primary that lost it in the failover):
        # their primaries now are scanned again, in full.
        moved = {slot for slot, node in now.items() if before.get(slot) != node}
        todo = {node for slot, node in now.items() if slot in moved or before.get(slot) in failed}
        if not todo:
            return result
        log.warning(
            "cluster topology changed during the sweep (%d slots moved, failed nodes: %s): "
            "re-scanning %s",
            len(moved),
            ", ".join(sorted(failed)) or "none",
            ", ".join(sorted(todo)),
        )
        before = now
    raise SweepIncomplete(f"cluster topology still changing after {MAX_ROUNDS} re-scans")


def _sweep_nodes(
    client: RedisCluster, names: list[str], sweep_node: NodeSweep, result: SweepResult
) -> set[str]:
    """Sweep the primaries `names` concurrently; return the names of those that failed."""
    failed: set[str] = set()
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="sweep") as pool:
        futures = {name: pool.submit(_sweep_named, client, name, sweep_node) for name in names}
        for name, future in futures.items():
            try:
                result.add(future.result())
            except NODE_FAULTS as exc:
                log.warning(
                    "sweep of cluster node %s failed (%s): its slots are re-scanned", name, exc
                )
                failed.add(name)
    return failed


def _sweep_named(client: RedisCluster, name: str, sweep_node: NodeSweep) -> SweepResult:
    node = client.get_node(node_name=name)
    if node is None:
        raise redis.ConnectionError(f"cluster node {name} is no longer known")
    return sweep_node(client.get_redis_connection(node))


def _slot_owners(client: RedisCluster, *, refresh: bool) -> dict[int, str]:
    """The primary (host:port) serving each slot, as the client routes now or, with `refresh`,
    as the cluster says now (asked again until it answers, up to TOPOLOGY_WAIT)."""
    deadline = time.monotonic() + TOPOLOGY_WAIT
    while True:
        try:
            if refresh:
                client.nodes_manager.initialize()
            cache: dict[int, list[Any]] = client.nodes_manager.slots_cache
            return {slot: nodes[0].name for slot, nodes in cache.items() if nodes}
        except NODE_FAULTS as exc:
            if time.monotonic() > deadline:
                raise SweepIncomplete(f"cluster topology unavailable: {exc}") from exc
            log.warning("cluster topology unavailable (%s): asking again", exc)
            time.sleep(0.2)
            refresh = True
