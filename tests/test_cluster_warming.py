"""The warming tests again, with the cache on the 3-primary Redis Cluster: warmed values equal
fresh queries, a change makes its key fresh again, the stale-set race is closed by the lease
guard, concurrent writers converge, and `check` reads every primary."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis

from adapters.redis.connection import is_cluster
from config.query import SEED_WARM_PATTERNS
from tests.services import wait_for
from tests.test_warming import (  # collected here again, with this module's fixtures
    cached,
    test_a_change_rewarms_its_pattern,
    test_check_reports_a_stale_key,
    test_concurrent_writers_converge,
    test_random_patterns_are_the_fresh_response,
    test_stale_set_race,
    test_warmed_value_is_the_fresh_response,
)
from tests.warm_fixtures import WarmEnv, seed_elements, warm_env

__all__ = [
    "test_a_change_rewarms_its_pattern",
    "test_check_reports_a_stale_key",
    "test_concurrent_writers_converge",
    "test_random_patterns_are_the_fresh_response",
    "test_stale_set_race",
    "test_warmed_value_is_the_fresh_response",
]


def on_cluster(services: dict[str, str]) -> dict[str, str]:
    return {**services, "PRIMER_REDIS_URL": services["PRIMER_REDIS_CLUSTER_URL"]}


@pytest.fixture(scope="module")
def static(
    services: dict[str, str],
    mysql_params: dict,
    cluster_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WarmEnv]:
    workdir = tmp_path_factory.mktemp("cluster-warm-static")
    with warm_env(on_cluster(services), mysql_params, cluster_client, workdir) as env:
        assert is_cluster(env.rt.redis)
        seed_elements(env.conn, 400, random.Random(7))
        yield env


@pytest.fixture(scope="module")
def pipeline(
    services: dict[str, str],
    mysql_params: dict,
    cluster_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WarmEnv]:
    workdir = tmp_path_factory.mktemp("cluster-warm-pipeline")
    with warm_env(on_cluster(services), mysql_params, cluster_client, workdir) as env:
        seed_elements(env.conn, 300, random.Random(11))
        env.start_worker()
        env.start_listener()
        wait_for(
            lambda: all(cached(env, q) for q in SEED_WARM_PATTERNS),
            timeout=30,
            what="the cold start warming every seed pattern",
        )
        yield env
