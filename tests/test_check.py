"""The consistency check: `primer-cache check [--sample N]` on demand, and beat's periodic
check exported by the worker; against a real MariaDB, Redis, worker and beat. No listener
runs here, so a row changed by hand leaves the cached value stale, as a lost invalidation
would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from config.query import Query
from tests.services import free_port, scrape, wait_for
from tests.sidecar import Sidecar, isolated

SECURITY = Query(("security",))
PROCESS = Query(("process",), 0.2)


@dataclass
class Checked(Sidecar):
    # beat checks every key (a sample larger than the cache) every second
    extra_toml: str = "[check]\nsample = 1000\nevery_s = 1\n"
    worker_port: int = field(default_factory=free_port)


@pytest.fixture(scope="module")
def car(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Checked]:
    workdir = tmp_path_factory.mktemp("check")
    with isolated(Checked, services, mysql_params, redis_client, workdir) as sidecar:
        sidecar.insert_chunk("c1", "security", "0.90", "required", title="One")
        sidecar.insert_chunk("c2", "process", "0.50", "optional", title="Two")
        sidecar.start_worker(metrics_port=sidecar.worker_port)
        warm(sidecar, SECURITY)
        warm(sidecar, PROCESS)
        yield sidecar


def warm(car: Sidecar, query: Query) -> None:
    args = ["--categories", *query.categories, "--priority", str(query.priority_threshold)]
    done = car.cli("warm", *args)
    assert done.returncode == 0 and "warmed" in done.stdout, done.stdout + done.stderr


def check(car: Sidecar, *args: str) -> tuple[int, dict[str, Any]]:
    done = car.cli("check", "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def check_gauges(port: int) -> dict[str, float]:
    _, text = scrape(port)
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "primer_cache_check_keys"
        for sample in family.samples
    }


def test_healthy_cache_then_a_stale_and_an_undecodable_value(car: Checked) -> None:
    code, report = check(car)
    assert (code, report["checked"], report["stale"], report["undecodable"]) == (0, 2, 0, 0)
    code, report = check(car, "--sample", "1")
    assert (code, report["checked"], report["sample"]) == (0, 1, 1)

    car.execute("UPDATE megamind_chunks SET content = 'edited by hand' WHERE chunk_id = 'c1'")
    stale_key = car.keys.build(SECURITY)
    code, report = check(car)
    assert code == 1 and report["stale_keys"] == [stale_key] and report["checked"] == 2
    text = car.cli("check", "--sample", "5")
    assert text.returncode == 1 and f"stale: {stale_key}" in text.stdout

    (garbage,) = car.plant(Query(("garbage",)))  # b"cached": no primer response
    code, report = check(car)
    assert code == 1 and report["undecodable_keys"] == [garbage]
    car.redis.delete(garbage)
    warm(car, SECURITY)  # fresh again
    assert check(car)[0] == 0


def test_bad_sample_is_a_usage_error(car: Checked) -> None:
    for bad in ("0", "-3", "many"):
        done = car.cli("check", "--sample", bad)
        assert done.returncode == 2 and bad in done.stderr, done.stderr


def test_beat_runs_the_check_and_the_worker_exports_it(car: Checked) -> None:
    beat = car.start_beat()
    try:
        wait_for(
            lambda: check_gauges(car.worker_port).get("checked") == 2,
            timeout=30,
            what="the periodic check to export 2 keys checked",
        )
        assert check_gauges(car.worker_port)["stale"] == 0
        car.execute("UPDATE megamind_chunks SET content = 'edited again' WHERE chunk_id = 'c2'")
        wait_for(
            lambda: check_gauges(car.worker_port).get("stale") == 1,
            timeout=30,
            what="the periodic check to export the stale key",
        )
        warm(car, PROCESS)
        wait_for(
            lambda: check_gauges(car.worker_port).get("stale") == 0,
            timeout=30,
            what="the periodic check to find the cache fresh again",
        )
    finally:
        beat.stop()
