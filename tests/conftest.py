"""Fixtures for real services. A test that cannot reach them fails under CI=true and is
skipped only on a developer machine without `make services`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import hypothesis
import pymysql
import pytest
import redis

from tests.services import connect, mysql_settings, scratch_database, service_env

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests judge results, not speed: a loaded CI machine must not fail them on time.
hypothesis.settings.register_profile("primer-cache", deadline=None)
hypothesis.settings.load_profile("primer-cache")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"service unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"service unavailable (run `make services`): {reason}")


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    env = service_env()
    if "PRIMER_MYSQL_URL" not in env:
        _unavailable("PRIMER_MYSQL_URL is not set and .run/services.env is missing")
    return env


@pytest.fixture(scope="session")
def amqp_url(services: dict[str, str]) -> str:
    """The private RabbitMQ that scripts/services.sh starts."""
    url = services.get("PRIMER_AMQP_URL")
    if not url:
        _unavailable("PRIMER_AMQP_URL is not in .run/services.env (RabbitMQ not started)")
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu and amqp raise several kinds
        _unavailable(f"RabbitMQ: {exc}")
    return str(url)


@pytest.fixture(scope="session")
def mysql_params(services: dict[str, str]) -> dict[str, Any]:
    return mysql_settings(services).connect_kwargs()


@pytest.fixture(scope="session")
def admin(mysql_params: dict[str, Any]) -> Iterator[pymysql.Connection]:
    try:
        conn = connect(mysql_params)
    except pymysql.err.OperationalError as exc:
        _unavailable(f"MariaDB: {exc}")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def replica_params(services: dict[str, str]) -> dict[str, Any]:
    """The read replica scripts/services.sh starts (GTID replication of the private MariaDB)."""
    url = services.get("PRIMER_REPLICA_URL")
    if not url:
        _unavailable("PRIMER_REPLICA_URL is not set (scripts/services.sh starts the replica)")
    parsed = mysql_settings(services, "PRIMER_REPLICA_URL", need_database=False)
    try:
        connect(parsed.connect_kwargs()).close()
    except pymysql.err.OperationalError as exc:
        _unavailable(f"MariaDB replica: {exc}")
    return parsed.connect_kwargs()


@pytest.fixture(scope="session")
def redis_client(services: dict[str, str]) -> redis.Redis:
    client = redis.Redis.from_url(services.get("PRIMER_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis: {exc}")
    return client


@pytest.fixture(scope="session")
def cluster_client(services: dict[str, str]) -> redis.Redis:
    """The private 3-primary, 3-replica Redis Cluster (through the sidecar's own factory)."""
    from adapters.redis.connection import connect_redis, is_cluster

    url = services.get("PRIMER_REDIS_CLUSTER_URL")
    if not url:
        _unavailable("PRIMER_REDIS_CLUSTER_URL is not set (run `make services`)")
    try:
        client = connect_redis(url)
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis Cluster: {exc}")
    assert is_cluster(client), f"{url} is not a cluster"
    return client


@pytest.fixture
def database(admin: pymysql.Connection) -> Iterator[str]:
    """A fresh schema with the primer tables, dropped after the test."""
    with scratch_database(admin) as name:
        yield name


@pytest.fixture
def db(mysql_params: dict[str, Any], database: str) -> Iterator[pymysql.Connection]:
    conn = connect(mysql_params, database)
    yield conn
    conn.close()
