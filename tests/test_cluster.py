"""The cache on a real 3-primary, 3-replica Redis Cluster (started by scripts/services.sh): the
pipeline end to end, sweeps over every primary, and a primary failing over mid-sweep."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from adapters.redis.connection import connect_redis
from adapters.redis.unlink import UNLINK_BATCH, unlink_groups
from config.query import Query
from config.settings import DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat, checkpoint_key, leader_key
from tasks.work.sweep import sweep
from tests.services import delete_prefix, unique, wait_for
from tests.sidecar import Sidecar, isolated
from tests.test_pipeline import test_category_move_hits_old_and_new as category_move
from tests.test_pipeline import test_ddl_on_a_watched_table_flushes_every_key as ddl_flush
from tests.test_pipeline import test_listener_killed_resumes_from_its_checkpoint as resumes
from tests.test_pipeline import test_random_changes_delete_exactly_the_affected_keys as random_run
from tests.test_pipeline import test_status_reports_checkpoint_and_queues as status_reports


@pytest.fixture(scope="module")
def cluster_sidecar(
    services: dict[str, str],
    mysql_params: dict,
    cluster_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sidecar]:
    # The cache on the cluster; the broker stays on the plain Redis (Celery's Redis transport
    # has no cluster support).
    env = {**services, "PRIMER_REDIS_URL": services["PRIMER_REDIS_CLUSTER_URL"]}
    workdir = tmp_path_factory.mktemp("cluster")
    with isolated(Sidecar, env, mysql_params, cluster_client, workdir) as car:
        car.start_worker()
        car.start_listener()
        car.sync()
        yield car


def primary_of(client: redis.Redis, key: str) -> str:
    return client.get_node_from_key(key).name  # type: ignore[attr-defined]


# ---- the pipeline on the cluster --------------------------------------------------------------


@pytest.mark.parametrize("seed", [3, 4])  # test_pipeline runs 1 and 2 on one node
def test_random_changes_on_the_cluster(cluster_sidecar: Sidecar, seed: int) -> None:
    random_run(cluster_sidecar, seed)


def test_planted_keys_live_on_every_primary(cluster_sidecar: Sidecar) -> None:
    keys = cluster_sidecar.plant(*(Query((f"c{i}",)) for i in range(60)))
    assert len({primary_of(cluster_sidecar.redis, key) for key in keys}) == 3


def test_category_move_on_the_cluster(cluster_sidecar: Sidecar) -> None:
    category_move(cluster_sidecar)


def test_listener_resumes_from_a_checkpoint_on_the_cluster(cluster_sidecar: Sidecar) -> None:
    resumes(cluster_sidecar)
    # the fencing scripts touch both keys: they must share one slot
    prefix = cluster_sidecar.state_prefix
    assert key_slot(leader_key(prefix).encode()) == key_slot(checkpoint_key(prefix).encode())


def test_flush_covers_every_primary(cluster_sidecar: Sidecar) -> None:
    ddl_flush(cluster_sidecar)


def test_status_reads_the_cluster(cluster_sidecar: Sidecar) -> None:
    status_reports(cluster_sidecar)


# ---- sweeps ---------------------------------------------------------------------------------


@given(st.lists(st.binary(min_size=1, max_size=12), max_size=1500))
def test_unlink_groups_stay_in_one_slot(raw: list[bytes]) -> None:
    groups = unlink_groups(list(raw), by_slot=True)
    assert sorted(k for group in groups for k in group) == sorted(raw)
    for group in groups:
        assert 0 < len(group) <= UNLINK_BATCH
        assert len({key_slot(k) for k in group}) == 1


def plant_many(client: redis.Redis, keys: KeyFormat, n: int) -> list[str]:
    names = [keys.build(Query((f"cat{i % 97}",), limit=i + 1)) for i in range(n)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.set(name, b"x")
    pipe.execute()
    return names


def remaining(client: redis.Redis, keys: KeyFormat) -> int:
    return sum(1 for _ in client.scan_iter(match=keys.scan_pattern(), count=1000))


def test_sweep_deletes_on_every_primary(cluster_client: redis.Redis) -> None:
    keys = KeyFormat(unique("sw") + ":megamind:primer:", DEFAULT_KEY_TEMPLATE)
    try:
        plant_many(cluster_client, keys, 3000)
        result = sweep(cluster_client, keys, lambda f: f.cats.endswith("7"))
        expected = sum(1 for i in range(3000) if str(i % 97).endswith("7"))
        assert (result.scanned, result.deleted) == (3000, expected)
        assert remaining(cluster_client, keys) == 3000 - expected
    finally:
        delete_prefix(cluster_client, keys.head)


def replica_of(client: redis.Redis, primary: str) -> redis.Redis:
    """A client for one replica of `primary` (host:port), as its CLUSTER NODES lists it (waited
    for: right after an earlier failover the demoted primary takes a moment to show as one)."""
    conn = client.get_node(node_name=primary).redis_connection  # type: ignore[attr-defined]
    node_id = conn.execute_command("CLUSTER", "MYID").decode()

    def find() -> redis.Redis | None:
        for line in conn.execute_command("CLUSTER", "NODES").decode().splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3] == node_id and "slave" in fields[2]:
                if "fail" in fields[2]:
                    continue
                host, port = fields[1].split("@")[0].rsplit(":", 1)
                return redis.Redis(host=host, port=int(port))
        return None

    return wait_for(find, timeout=30, interval=0.1, what=f"a replica of {primary}")


@pytest.mark.parametrize("fault", ["failover", "sigstop"])
def test_a_primary_failing_over_mid_sweep_loses_no_key(
    services: dict[str, str], caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """Every node's scan is held after its first page while one primary is replaced (a replica
    takes over: CLUSTER FAILOVER, or the primary frozen with SIGSTOP until the cluster fails it
    over), then the scans go on: every key must still be deleted, the moved slots re-scanned."""
    client = connect_redis(services["PRIMER_REDIS_CLUSTER_URL"], socket_timeout=2)
    keys = KeyFormat(unique("fo") + ":megamind:primer:", DEFAULT_KEY_TEMPLATE)
    n = 6000
    names = plant_many(client, keys, n)
    victim = primary_of(client, names[0])
    victim_node = client.get_node(node_name=victim).redis_connection  # type: ignore[attr-defined]
    victim_pid = int(victim_node.info("server")["process_id"])
    replica = replica_of(client, victim)
    held, resume = threading.Event(), threading.Event()

    def doomed(_: object) -> bool:
        held.set()
        resume.wait(60)  # every sweep thread stops at its first verdict until the failover
        return True

    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = sweep(client, keys, doomed, count=50)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    stopped = False
    try:
        thread.start()
        wait_for(held.is_set, timeout=30, what="the sweep to start")
        if fault == "failover":
            replica.execute_command("CLUSTER", "FAILOVER")
        else:
            os.kill(victim_pid, signal.SIGSTOP)
            stopped = True
        wait_for(
            lambda: replica.info("replication")["role"] == "master",
            timeout=60,
            what=f"a replica of {victim} to take over",
        )
        resume.set()
        thread.join(120)
        assert "error" not in outcome, outcome.get("error")
        assert remaining(client, keys) == 0, "keys survived the failover"
        result = outcome["result"]
        # a failed node's own count is lost with it: the keys, not the count, must be right
        assert 0 < result.deleted <= n  # type: ignore[attr-defined]
        assert any("re-scanning" in r.getMessage() for r in caplog.records)
    finally:
        resume.set()
        thread.join(120)
        if stopped:
            os.kill(victim_pid, signal.SIGCONT)  # it rejoins as a replica of the new primary
        wait_for(
            lambda: all(
                node.redis_connection.cluster("info")["cluster_state"] == "ok"  # type: ignore[attr-defined]
                for node in client.get_nodes()  # type: ignore[attr-defined]
            ),
            timeout=60,
            what="the cluster to settle",
        )
        replica.close()
        delete_prefix(client, keys.head)
