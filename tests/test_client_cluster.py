"""The client on the private 3-primary Redis Cluster: tracking on every primary keeps the L1
exact for keys on each of them, a killed tracking connection on one primary empties and
bypasses the L1, and reads and fills go through the leases on whichever node owns the key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from primer_cache_client import PrimerCache, PrimerQuery
from redis.cluster import RedisCluster

from adapters.redis import leases
from tests.client_fixtures import Database, cleaned, fresh_prefix, version_of
from tests.services import wait_for
from tests.test_client_redis_limits import ACL_RULES

CANDIDATES = [PrimerQuery(include_categories=(f"c{n}",)) for n in range(60)]


@pytest.fixture
def prefix(cluster_client: redis.Redis) -> Iterator[str]:
    prefix = fresh_prefix()
    leases.load_library(cluster_client)
    with cleaned(cluster_client, prefix):
        yield prefix


@pytest.fixture
def cache(services: dict[str, str], prefix: str) -> Iterator[PrimerCache]:
    with PrimerCache(
        services["PRIMER_REDIS_CLUSTER_URL"], prefix=prefix, ping_interval_s=0.2
    ) as cache:
        assert cache.tracking.wait_established(20), "tracking on every primary"
        yield cache


def _spread(cluster: RedisCluster, prefix: str) -> list[PrimerQuery]:
    """Three queries whose keys live on each primary."""
    by_node: dict[str, list[PrimerQuery]] = {}
    for query in CANDIDATES:
        by_node.setdefault(cluster.get_node_from_key(query.key(prefix)).name, []).append(query)
    return [q for queries in by_node.values() for q in queries[:3]]


def _in_l1(cache: PrimerCache, query: PrimerQuery, db: Database) -> None:
    key = query.key(cache.options.prefix)

    def held() -> bool:
        cache.get(query, db.load)
        return cache._path.l1.get(key) is not None

    wait_for(held, timeout=10, what=f"{key} to enter the L1")


def test_l1_invalidation_and_leases_on_every_primary(
    cluster_client: redis.Redis, cache: PrimerCache, prefix: str
) -> None:
    cluster: RedisCluster = cluster_client  # type: ignore[assignment]
    queries = _spread(cluster, prefix)
    keys = [q.key(prefix) for q in queries]
    assert len({cluster.get_node_from_key(k).name for k in keys}) == 3, "keys on 3 primaries"
    assert len(cache.tracking.connection_ids()) == 3
    dbs = [Database() for _ in queries]
    for query, db in zip(queries, dbs, strict=True):
        assert version_of(cache.get(query, db.load)) == 1  # miss: lease, load, fill
        _in_l1(cache, query, db)
    assert cache.stats()["fills"] == len(queries)
    assert all(db.calls == 1 for db in dbs)

    # The sidecar deletes every key (through its invalidate function, on the owning node);
    # each primary's tracking connection tells the L1.
    for db, key in zip(dbs, keys, strict=True):
        db.version = 2
        leases.invalidate(cluster, [[key.encode()]], "IDLETIME", 0, 1)
    l1 = cache._path.l1
    wait_for(lambda: all(l1.get(k) is None for k in keys), timeout=10,
             what="every L1 copy to be invalidated")  # fmt: skip
    for query, db in zip(queries, dbs, strict=True):
        assert version_of(cache.get(query, db.load)) == 2


def test_killed_tracking_on_one_primary_bypasses_the_l1(
    cluster_client: redis.Redis, cache: PrimerCache, prefix: str
) -> None:
    cluster: RedisCluster = cluster_client  # type: ignore[assignment]
    query, db = CANDIDATES[0], Database()
    key = query.key(prefix)
    _in_l1(cache, query, db)
    owner = cluster.get_node_from_key(key)
    # Kill the tracking connection on a primary that does NOT own the key: the L1 as a whole
    # cannot be trusted (that primary's keys may change unseen), so it is emptied.
    other = next(n for n in cluster.get_primaries() if n.name != owner.name)
    node = cluster.get_redis_connection(other)
    mine = set(cache.tracking.connection_ids())
    killed = [
        c["id"] for c in node.client_list() if int(c["id"]) in mine and "t" in c.get("flags", "")
    ]
    assert len(killed) == 1, node.client_list()
    node.execute_command("CLIENT", "KILL", "ID", killed[0])
    wait_for(lambda: cache.stats()["tracking"]["drops"] >= 1, timeout=10, what="the drop")
    assert cache._path.l1.get(key) is None
    assert cache.tracking.wait_established(20), "tracking back on every primary"
    _in_l1(cache, query, db)


# The client README's cluster additions to its ACL user (keep them the same).
CLUSTER_ACL_RULES = [
    "+cluster|slots",
    "+cluster|shards",
    "+cluster|nodes",
    "+command",
    "+role",
    "+asking",
]


def test_the_readme_acl_user_is_enough_on_the_cluster(
    services: dict[str, str], cluster_client: redis.Redis, prefix: str
) -> None:
    """The README's user, on every node of the private cluster (removed afterwards)."""
    cluster: RedisCluster = cluster_client  # type: ignore[assignment]
    user = f"primer-acl-{prefix.split(':')[1]}"
    rules = [r.replace("~megamind:primer:", f"~{prefix}") for r in ACL_RULES] + CLUSTER_ACL_RULES
    nodes = cluster.get_nodes()
    for node in nodes:
        cluster.get_redis_connection(node).execute_command("ACL", "SETUSER", user, *rules)
    try:
        host = services["PRIMER_REDIS_CLUSTER_URL"].split("//", 1)[1]
        url = f"redis://{user}:primer-secret@{host}"
        queries = _spread(cluster, prefix)
        db = Database()
        with PrimerCache(url, prefix=prefix, ping_interval_s=0.2) as cache:
            assert cache.tracking.wait_established(20), "tracking with the ACL user"
            for query in queries:
                cache.get(query, db.load)  # lease, load, fill
                _in_l1(cache, query, db)  # a Redis hit, then the L1
            stats = cache.stats()
        assert stats["cache_faults"] == 0, stats
        assert stats["fills"] == len(queries) and db.calls == len(queries)
    finally:
        for node in nodes:
            cluster.get_redis_connection(node).execute_command("ACL", "DELUSER", user)
