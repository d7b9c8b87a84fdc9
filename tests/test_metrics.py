"""Both metrics endpoints, as Prometheus reads them: a real listener and a real prefork worker
(whose pool children are replaced after every task), changes flowing through MariaDB's binlog,
and prometheus-client's own parser on what the endpoints serve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from config.query import Query
from tests.services import free_port, scrape, wait_for
from tests.sidecar import Sidecar, isolated

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(port: int) -> Samples:
    status, text = scrape(port)
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Metered(Sidecar):
    listener_port: int = field(default_factory=free_port)
    worker_port: int = field(default_factory=free_port)


@pytest.fixture(scope="module")
def car(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Metered]:
    workdir = tmp_path_factory.mktemp("metrics")
    with isolated(Metered, services, mysql_params, redis_client, workdir) as sidecar:
        # Two pool children, each replaced after one task: what a dead child counted must
        # still be served by the main process.
        sidecar.start_worker(
            concurrency=2,
            metrics_port=sidecar.worker_port,
            extra=("--max-tasks-per-child", "1"),
        )
        sidecar.start_listener(metrics_port=sidecar.listener_port)
        sidecar.sync()
        # Two pool children: the cold-start flush may still be running after the sentinel
        # went (and would take a later sentinel with it); its end moves the checkpoint.
        sidecar.checkpointed()
        yield sidecar


def test_both_endpoints_parse_and_move_when_changes_flow(car: Metered) -> None:
    lport, wport = car.listener_port, car.worker_port
    before_l, before_w = samples(lport), samples(wport)
    keys = car.plant(Query(("security",)), Query(("security",), 0.5))
    car.insert_chunk("m1", "security", "0.90", "required")
    car.execute("UPDATE megamind_chunks SET access_count = access_count + 1 WHERE chunk_id='m1'")
    car.execute("UPDATE megamind_chunks SET priority_score = 0.40 WHERE chunk_id = 'm1'")
    car.execute("DELETE FROM megamind_chunks WHERE chunk_id = 'm1'")
    car.sync()
    assert car.present(keys) == set()
    after_l = samples(lport)

    def moved(name: str, **labels: str) -> float:
        return value(after_l, name, **labels) - value(before_l, name, **labels)

    table = "megamind_chunks"
    assert value(after_l, "primer_cache_listener_is_leader") == 1
    for op in ("insert", "update", "delete"):
        assert moved("primer_cache_listener_events_total", table=table, operation=op) >= 1, op
    assert moved("primer_cache_listener_events_ignored_total") >= 1  # the access-count bump
    assert moved("primer_cache_listener_batches_published_total") >= 1
    assert moved("primer_cache_listener_batch_transactions_count") >= 1
    assert moved("primer_cache_listener_transactions_total") >= 4
    for name in (
        "primer_cache_listener_lag_seconds",
        "primer_cache_listener_checkpoint_age_seconds",
        "primer_cache_listener_redeliveries_total",
    ):
        assert (name, ()) in after_l, name
    assert ("primer_cache_listener_fallback_flushes_total", (("reason", "ddl"),)) in after_l

    # The worker: every pool child that ran a sweep has exited by now (one task each).
    def worker_moved(name: str) -> float:
        return value(samples(wport), name) - value(before_w, name)

    wait_for(
        lambda: worker_moved("primer_cache_worker_keys_invalidated_total") >= len(keys) + 1,
        timeout=20,
        what="the worker endpoint to count the deleted keys (sentinel included)",
    )
    after_w = samples(wport)
    assert value(after_w, "primer_cache_worker_keys_scanned_total") >= len(keys) + 1
    assert value(after_w, "primer_cache_worker_sweep_seconds_count") >= 1
    for name in (
        "primer_cache_worker_end_to_end_seconds_count",
        "primer_cache_worker_warm_seconds_count",
        "primer_cache_worker_guard_refusals_total",
        "primer_cache_worker_refreshes_total",
        "primer_cache_worker_replica_followups_total",
        "primer_cache_worker_leases_revoked_total",
    ):
        assert (name, ()) in after_w, name
    assert ("primer_cache_worker_warms_total", (("outcome", "warmed"),)) in after_w


def test_end_to_end_histogram_counts_each_batch(car: Metered) -> None:
    lport, wport = car.listener_port, car.worker_port
    car.sync()

    def counts() -> tuple[float, float]:
        return (
            value(samples(lport), "primer_cache_listener_batches_published_total"),
            value(samples(wport), "primer_cache_worker_end_to_end_seconds_count"),
        )

    # Every batch the listener published so far has been swept: the counts agree.
    published, observed = wait_for(lambda: (c := counts())[0] == c[1] and c, what="equal counts")
    for n in range(5):
        car.insert_chunk(f"e2e{n}", "development", "0.50", "optional")
        car.sync()
    now_published, now_observed = wait_for(
        lambda: (c := counts())[0] == c[1] and c, what="one observation per published batch"
    )
    assert now_published >= published + 5  # at least one batch per sync
    assert now_observed - observed == now_published - published
    # Each observation is now minus a commit a few moments ago, never a 1970 epoch.
    assert value(samples(wport), "primer_cache_worker_end_to_end_seconds_bucket", le="600.0") == (
        now_observed
    )


def test_healthz_on_both_ports(car: Metered) -> None:
    for port in (car.listener_port, car.worker_port):
        assert scrape(port, "/healthz") == (200, "ok\n")
    assert scrape(car.worker_port, "/nothing-here")[0] == 404
