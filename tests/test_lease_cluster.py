"""The primer_cache function library on the private 3-primary Redis Cluster (scripts/services.sh):
every function touches only its key's slot, so it runs unchanged on whichever primary owns
the key, and the sweep revokes leases there as it does on one node."""

from __future__ import annotations

from decimal import Decimal

import redis
from redis.cluster import RedisCluster

import tests.warm_fixtures  # noqa: F401  (tasks.app reads the services' URLs from os.environ)
from adapters.redis import leases
from adapters.redis.lease_library import LIBRARY_NAME
from adapters.redis.unlink import Heat
from config.query import Query
from config.settings import DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat, lease_key
from core.predicate import ChangeIndex, ElementImage
from tasks.work.sweep import delete_keys, sweep
from tests.services import unique

LEASE_MS = 10_000


def test_leases_work_on_every_primary(cluster_client: redis.Redis) -> None:
    cluster: RedisCluster = cluster_client  # type: ignore[assignment]
    leases.load_library(cluster)
    primaries = cluster.get_primaries()
    assert len(primaries) == 3
    for node in primaries:
        assert cluster.get_redis_connection(node).function_list(library=LIBRARY_NAME)

    keys = KeyFormat(unique("t") + ":megamind:primer:", DEFAULT_KEY_TEMPLATE)
    built = [keys.build(Query((f"c{n}",), limit=n + 1)) for n in range(30)]
    owners = {cluster.get_node_from_key(key).name for key in built}
    assert len(owners) == 3, "the keys should spread over all three primaries"
    try:
        for key in built:
            first = leases.read(cluster, key, LEASE_MS)
            assert first.kind == "lease" and first.token, key
            assert leases.read(cluster, key, LEASE_MS).kind == "busy"
            lease = lease_key(key)
            assert lease is not None
            # the lease lives on the primary that owns the key
            assert cluster.get_node_from_key(lease).name == cluster.get_node_from_key(key).name
            assert leases.fill(cluster, key, first.token, b"{}", 60)
            assert leases.read(cluster, key, LEASE_MS) == ("hit", b"{}")

        # Fresh leases on absent keys, then a sweep over every primary that affects half the
        # categories: exactly those leases are revoked, on whichever node holds them.
        cluster.delete(*built)  # one by one: the cluster client splits it by slot
        tokens = {key: leases.read(cluster, key, LEASE_MS).token for key in built}
        affected = {f"c{n}" for n in range(0, 30, 2)}
        index = ChangeIndex([ElementImage(c, Decimal("0.5"), "required") for c in affected])
        result = sweep(cluster, keys, index.affects)
        assert result.leases_revoked == len(affected)
        for n, key in enumerate(built):
            written = leases.fill(cluster, key, tokens[key] or "", b"{}", 60)
            assert written == (f"c{n}" not in affected), key
    finally:
        for key in built:
            cluster.delete(key, lease_key(key) or key)


def test_the_sweep_holds_hot_keys_on_every_primary(cluster_client: redis.Redis) -> None:
    """With refresh on, the sweep deletes through primer_cache_invalidate, one slot per call:
    every hot key it deletes, on whichever primary, is held for its refresh (readers `busy`),
    present keys and absent ones with a lease out alike; so are the known keys deleted
    ahead of a sweep."""
    cluster: RedisCluster = cluster_client  # type: ignore[assignment]
    leases.load_library(cluster)
    keys = KeyFormat(unique("t") + ":megamind:primer:", DEFAULT_KEY_TEMPLATE)
    present = [keys.build(Query((f"c{n}",), limit=n + 1)) for n in range(20)]
    leased = [keys.build(Query((f"c{n}",), limit=n + 50)) for n in range(20)]
    ahead = [keys.build(Query((f"c{n}",), limit=n + 90)) for n in range(6)]
    try:
        for key in (*present, *ahead):
            cluster.set(key, b"{}", ex=600)
        tokens = {key: leases.read(cluster, key, LEASE_MS).token for key in leased}
        heat = Heat("IDLETIME", 60)
        early = delete_keys(cluster, [key.encode() for key in ahead], heat)
        assert early.deleted == len(ahead) and sorted(early.held) == sorted(ahead)
        result = sweep(cluster, keys, lambda key_filter: True, heat=heat)
        assert result.deleted == len(present)
        assert result.leases_revoked >= len(leased)
        # the keys deleted ahead were held: the sweep finds those leases and takes them over
        assert sorted(result.held) == sorted([*present, *leased, *ahead])
        for key in (*present, *leased, *ahead):
            assert leases.read(cluster, key, LEASE_MS).kind == "busy", key
        for key in leased:  # the reader's lease was revoked when the sweep took it over
            assert not leases.fill(cluster, key, tokens[key] or "", b"{}", 60)
        assert leases.release(cluster, result.held) == len(result.held)
        assert all(leases.read(cluster, key, LEASE_MS).kind == "lease" for key in present)
    finally:
        for key in (*present, *leased, *ahead):
            cluster.delete(key, lease_key(key) or key)
