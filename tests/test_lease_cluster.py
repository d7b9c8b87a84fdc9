"""The primer_cache function library on a 3-primary Redis Cluster started by this test (its
own redis-servers on free ports, data in a temporary directory, stopped after): every
function touches only its key's slot, so it runs unchanged on whichever primary owns it."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from adapters import leases
from adapters.lease_library import LIBRARY_NAME
from config.query import Query
from config.settings import DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat, lease_key
from tests.conftest import IN_CI
from tests.services import Process, unique, wait_for

LEASE_MS = 10_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    server, tool = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not tool:
        message = "redis-server and redis-cli are needed (scripts/services.sh installs them)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("cluster")
    ports = [free_port() for _ in range(3)]
    nodes = []
    try:
        for port in ports:
            data = workdir / str(port)
            data.mkdir()
            nodes.append(
                Process(
                    [
                        server,
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", str(data / "nodes.conf"),
                        "--dir", str(data),
                        "--save", "",
                        "--appendonly", "no",
                    ],
                    {"PATH": "/usr/bin:/bin"},
                    Path(data / "log"),
                )
            )  # fmt: skip
        for port in ports:
            wait_for(lambda p=port: _pings(p), timeout=20, what=f"redis-server on {port}")
        subprocess.run(
            [
                tool,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(lambda: all(_cluster_ok(p) for p in ports), timeout=30, what="cluster_state:ok")
        client = RedisCluster(host="127.0.0.1", port=ports[0])
        yield client
        client.close()
    finally:
        for node in nodes:
            node.stop()


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=1).ping())
    except redis.ConnectionError:
        return False


def _cluster_ok(port: int) -> bool:
    info = redis.Redis(port=port).cluster("INFO")
    return info.get("cluster_state") == "ok"


def test_leases_work_on_every_primary(cluster: RedisCluster) -> None:
    leases.load_library(cluster)
    primaries = cluster.get_primaries()
    assert len(primaries) == 3
    for node in primaries:
        assert cluster.get_redis_connection(node).function_list(library=LIBRARY_NAME)

    keys = KeyFormat(unique("t") + ":megamind:primer:", DEFAULT_KEY_TEMPLATE)
    built = [keys.build(Query((f"c{n}",), limit=n + 1)) for n in range(30)]
    owners = {cluster.get_node_from_key(key).name for key in built}
    assert len(owners) == 3, "the keys should spread over all three primaries"
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
        # a revocation (what the sweep does: delete the lease key with its cache key)
        second = leases.warm_lease(cluster, key, LEASE_MS)
        assert second
        cluster.delete(lease)
        assert not leases.fill(cluster, key, second, b"{}", 60)
        cluster.delete(key)
