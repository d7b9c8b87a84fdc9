"""Health as operators and probes see it: `primer-cache status [--json]` and the listener's
`/healthz`, against a real listener, worker, MariaDB and Redis, with the faults caused:
a warm key deleted, the worker frozen (SIGSTOP), the listener killed (SIGKILL)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from config.query import SEED_WARM_PATTERNS
from core.keys import leader_key
from tests.services import free_port, scrape, wait_for
from tests.sidecar import Sidecar, isolated

LOCK_TTL_S = 3.0  # tests.sidecar's listener.leader_ttl_ms


@dataclass
class Watched(Sidecar):
    warm: bool = True  # the seed's three warm patterns
    listener_port: int = field(default_factory=free_port)


def batches_published(port: int) -> float:
    _, text = scrape(port)
    for family in text_string_to_metric_families(text):
        if family.name == "primer_cache_listener_batches_published":
            return family.samples[0].value
    raise AssertionError("no primer_cache_listener_batches_published_total")


def status(car: Sidecar) -> tuple[int, dict[str, Any]]:
    done = car.cli("status", "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def car(
    request: pytest.FixtureRequest,
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path: Any,
) -> Iterator[Watched]:
    """A sidecar with status.max_lag_s = 30, or the test's indirect parameter."""
    max_lag = getattr(request, "param", 30)
    extra = f"[status]\nmax_lag_s = {max_lag}\n"
    with isolated(
        Watched, services, mysql_params, redis_client, tmp_path, extra_toml=extra
    ) as sidecar:
        sidecar.start_worker()
        sidecar.start_listener(metrics_port=sidecar.listener_port)
        assert sidecar.cli("partitions", "ensure").returncode == 0
        sidecar.sync()
        yield sidecar


def test_status_fields_and_exit_status(car: Watched) -> None:
    warm_keys = [car.keys.build(q) for q in SEED_WARM_PATTERNS]
    wait_for(lambda: car.present(warm_keys) == set(warm_keys), what="the warm keys")
    code, info = wait_for(lambda: (s := status(car))[0] == 0 and s, what="a healthy status")
    assert info["healthy"] is True and info["problems"] == []
    assert info["leader"] == car.redis.get(leader_key(car.state_prefix)).decode()
    assert 0 <= info["lag_seconds"] <= info["max_lag_seconds"] == 30
    assert info["warm_keys"] == dict.fromkeys(warm_keys, True)
    assert info["warm_keys_present"] == 3
    partitions = info["partitions"]
    assert partitions["table"].endswith(".megamind_global_element_analytics_partitioned")
    assert partitions["headroom_months"] == 3  # partitions.months_ahead
    assert info["checkpoint"]["gtid"]
    # a Redis broker's empty queue is no list at all: 0 messages, not "not declared"
    assert info["queues"] == {f"{car.tag}.{q}": 0 for q in ("invalidate", "warm", "maintenance")}
    assert info["stats"]["sweeps"] >= 1

    car.redis.delete(warm_keys[1])
    code, info = status(car)
    assert code == 1 and info["healthy"] is False
    assert info["problems"] == [f"1 warm key(s) missing: {warm_keys[1]}"]
    text = car.cli("status")
    assert text.returncode == 1 and "UNHEALTHY" in text.stdout and warm_keys[1] in text.stdout


@pytest.mark.parametrize("car", [2], indirect=True)  # status.max_lag_s = 2
def test_lag_above_the_limit_is_unhealthy_until_the_workers_catch_up(car: Watched) -> None:
    wait_for(lambda: status(car)[0] == 0, what="a healthy status")
    assert scrape(car.listener_port, "/healthz") == (200, "ok\n")
    assert car.worker is not None
    car.worker.proc.send_signal(signal.SIGSTOP)  # the workers freeze: batches are not done
    try:
        # listener.max_in_flight (2) batches go out; the next waits, and the lag grows.
        for n in range(2):
            published = batches_published(car.listener_port)
            car.insert_chunk(f"lag{n}", "security", "0.50", "required")
            wait_for(
                lambda: batches_published(car.listener_port) > published,  # noqa: B023
                what=f"batch {n + 1} published",
            )
        car.insert_chunk("lag-held", "security", "0.50", "required")
        _, body = wait_for(
            lambda: (r := scrape(car.listener_port, "/healthz"))[0] == 503 and r,
            timeout=30,
            what="the listener's /healthz to report the lag",
        )
        assert "binlog lag" in body and "above 2 s" in body
        _, info = wait_for(lambda: (s := status(car))[0] == 1 and s, what="status to fail")
        assert any("binlog lag" in p and "status.max_lag_s = 2" in p for p in info["problems"])
    finally:
        car.worker.proc.send_signal(signal.SIGCONT)
    car.sync()
    wait_for(lambda: scrape(car.listener_port, "/healthz")[0] == 200, what="healthy again")
    wait_for(lambda: status(car)[0] == 0, what="a healthy status again")


def test_status_fails_once_the_listener_is_gone_longer_than_the_lock_ttl(car: Watched) -> None:
    wait_for(lambda: status(car)[0] == 0, what="a healthy status")
    killed = time.monotonic()
    car.kill_listener()
    seen = []

    def failed() -> dict[str, Any] | None:
        code, info = status(car)
        seen.append(info["problems"])
        return info if code == 1 else None

    info = wait_for(failed, timeout=30, what="status to fail")
    # The lock cannot lapse before its TTL has run from the last renewal (a quarter of it ago
    # at most): this bound holds however loaded the machine is.
    assert time.monotonic() - killed >= LOCK_TTL_S * 3 / 4, seen
    assert info["leader"] is None
    assert any("no listener holds the leader lock" in p for p in info["problems"])
