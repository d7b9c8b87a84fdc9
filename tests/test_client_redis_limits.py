"""The client against a Redis that limits it: a noeviction Redis at maxmemory (issue 22 item 6:
hits still served, invalidation still deletes, a miss's fill is refused and its lease given
back), and the least-privilege ACL user the client README documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from primer_cache_client import PrimerCache, PrimerQuery
from primer_cache_client.keys import lease_key

from adapters.redis import leases
from tests.client_fixtures import Database, version_of
from tests.private_servers import PrivateRedis

HIT = PrimerQuery(include_categories=("security",))
MISS = PrimerQuery(include_categories=("process",))
PREFIX = "megamind:primer:"


def _fill_until_oom(client: redis.Redis) -> None:
    """Write 2 MB of filler, then lower maxmemory to 256 KB under what Redis uses: every write
    is refused with OOM from then on (filling to the limit alone leaves it wavering around it:
    a command's own buffers tip it over for that command only)."""
    for n in range(32):
        client.set(f"filler:{n}", b"x" * 65536)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used - 262144)
    for _ in range(20):
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("probe", b"x")


def test_full_noeviction_redis_still_serves_hits_and_invalidates(tmp_path: Path) -> None:
    server = PrivateRedis(
        tmp_path / "redis", options=("--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
    )
    server.start()
    admin = server.client()
    try:
        leases.load_library(admin)
        db = Database()
        with PrimerCache(server.url, prefix=PREFIX, l1=False) as cache:
            assert version_of(cache.get(HIT, db.load)) == 1
            assert cache.stats()["fills"] == 1
            _fill_until_oom(admin)

            # A hit: primer_cache_read runs at maxmemory (allow-oom) and writes nothing.
            assert version_of(cache.get(HIT, db.load)) == 1
            stats = cache.stats()
            assert stats["redis_hits"] == 1 and stats["cache_faults"] == 0 and db.calls == 1

            # A miss: the lease is granted, the fill refused (OOM), the lease given back so
            # the next reader is not told busy for lease_ms.
            assert version_of(cache.get(MISS, db.load)) == 1
            stats = cache.stats()
            assert stats["fills"] == 1 and stats["cache_faults"] == 1 and db.calls == 2
            assert not admin.hexists(lease_key(MISS.key(PREFIX)) or "", "token")

        # The sidecar's invalidation deletes at maxmemory (allow-oom).
        (_key, done), *_ = leases.invalidate(admin, [[HIT.key(PREFIX).encode()]], "IDLETIME", 0, 1)
        assert done.deleted
        assert admin.exists(HIT.key(PREFIX)) == 0
    finally:
        admin.close()
        server.stop()


# The ACL user of the client README, verbatim (keep them the same).
ACL_RULES = [
    "on",
    ">primer-secret",
    "resetkeys",
    "~megamind:primer:*",
    "~primer-cache:lease:*",
    "resetchannels",
    "-@all",
    "+fcall",
    "+unlink",
    "+client|id",
    "+client|tracking",
    "+hello",
    "+ping",
    "+cluster|myid",  # how the client tells a cluster from a single node
    # what primer_cache_read, primer_cache_fill and primer_cache_release call inside (Redis
    # checks a script's commands against the caller's ACL)
    "+get",
    "+set",
    "+hget",
    "+hset",
    "+hdel",
    "+hexists",
    "+hincrby",
    "+pttl",
    "+pexpire",
    "+time",
]


@pytest.mark.parametrize("cluster", [False])
def test_the_readme_acl_user_is_enough(tmp_path: Path, cluster: bool) -> None:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    admin = server.client()
    try:
        leases.load_library(admin)
        admin.execute_command("ACL", "SETUSER", "primer", *ACL_RULES)
        url = f"redis://primer:primer-secret@127.0.0.1:{server.port}/0"
        db = Database()
        with PrimerCache(url, prefix=PREFIX) as cache:
            assert cache.tracking.wait_established(10), "tracking with the ACL user"
            assert version_of(cache.get(HIT, db.load)) == 1  # lease, load, fill
            admin.set(HIT.key(PREFIX), b"\x00 undecodable", ex=60)  # UNLINK's turn
            assert version_of(cache.get(HIT, db.load)) == 1
            for _ in range(3):
                cache.get(HIT, db.load)
            stats = cache.stats()
        assert stats["cache_faults"] == 1, stats  # the undecodable value only
        assert stats["fills"] == 2 and stats["undecodable_values"] == 1
        assert stats["redis_hits"] >= 1
    finally:
        admin.close()
        server.stop()
