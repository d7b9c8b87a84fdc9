"""Least privilege, TLS and secrets: the processes run with exactly the MySQL grants and Redis
ACL rule of docs/operations.md, the cache over TLS with a self-signed CA, and no password is
ever shown."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis

from adapters.redis.connection import connect_redis
from config import ConfigError, load_settings
from config.query import SEED_WARM_PATTERNS, Query
from tests.services import ROOT, cli, unique, wait_for
from tests.sidecar import Sidecar, isolated

OPERATIONS_DOC = (ROOT / "docs" / "operations.md").read_text()  # its "Least privilege" sections
PASSWORD = "s3cret-" + unique("")


def readme_grants() -> list[str]:
    return re.findall(r"^GRANT .*;$", OPERATIONS_DOC, flags=re.MULTILINE)


def readme_acl_rule() -> str:
    (rule,) = re.findall(r"^ACL SETUSER primer-cache .*$", OPERATIONS_DOC, flags=re.MULTILINE)
    return rule


def with_user(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    rest = rest.split("@", 1)[-1]
    return f"{scheme}://{user}:{password}@{rest}"


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, "a password was shown"


# ---- MySQL grants ---------------------------------------------------------------------------


@pytest.fixture
def mysql_users(admin: pymysql.Connection) -> Iterator[dict[str, str]]:
    """The documented users, renamed unique; `grant_readme` gives them its grants on a schema."""
    suffix = unique("")[:6]
    names = {role: f"primer_{role}_{suffix}" for role in ("listener", "worker", "partitions")}
    with admin.cursor() as cur:
        for name in names.values():
            cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{PASSWORD}'")
    try:
        yield names
    finally:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")


def grant_readme(admin: pymysql.Connection, names: dict[str, str], database: str) -> None:
    grants = readme_grants()
    assert len(grants) >= 4, "docs/operations.md lists the grants"
    with admin.cursor() as cur:
        for grant in grants:
            for role, name in names.items():
                grant = grant.replace(f"'primer_{role}'@'%'", f"'{name}'@'%'")
            cur.execute(grant.replace("megamind.", f"`{database}`."))


def test_processes_run_with_exactly_the_readme_grants(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    redis_client: redis.Redis,
    admin: pymysql.Connection,
    mysql_users: dict[str, str],
    tmp_path: Path,
) -> None:
    with isolated(Sidecar, services, mysql_params, redis_client, tmp_path) as car:
        grant_readme(admin, mysql_users, car.database)
        base = car.env["PRIMER_MYSQL_URL"]

        def as_role(role: str) -> str:
            return with_user(base, mysql_users[role], PASSWORD)

        car.env["PRIMER_MYSQL_URL"] = as_role("worker")
        car.start_worker()
        car.env["PRIMER_MYSQL_URL"] = as_role("listener")
        car.start_listener()
        car.insert_chunk("granted", "security", "0.90", "required", title="T")
        car.sync()
        keys = car.plant(Query(("security",)), Query(("process",)))
        car.execute("UPDATE megamind_global_elements SET title = 'U' WHERE chunk_id = 'granted'")
        car.sync()
        assert car.present(keys) == {keys[1]}

        car.env["PRIMER_MYSQL_URL"] = as_role("worker")
        warm = car.cli("warm", "--categories", "security")
        assert warm.returncode == 0, warm.stderr
        car.env["PRIMER_MYSQL_URL"] = as_role("partitions")
        ensure = car.cli("partitions", "ensure")
        assert ensure.returncode == 0, ensure.stderr
        outputs = [p.output() for p in car.processes] + [warm.stdout, warm.stderr, ensure.stderr]
        assert_no_secret(*outputs)


# ---- Redis ACL ------------------------------------------------------------------------------


@pytest.fixture
def acl_sidecar(
    services: dict[str, str],
    mysql_params: dict[str, Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> Iterator[Sidecar]:
    with isolated(Sidecar, services, mysql_params, redis_client, tmp_path, warm=True) as car:
        user = unique("primer_cache_")
        rule = (
            readme_acl_rule()
            .replace("primer-cache on", f"{user} on", 1)
            .replace(">SECRET", f">{PASSWORD}")
            .replace("~megamind:primer:*", f"~{car.key_prefix}*")
            # docs/operations.md: another state prefix adds the lease keys' own pattern
            .replace("~primer-cache:*", f"~{car.state_prefix}* ~primer-cache:lease:*")
        )
        redis_client.execute_command(*rule.split())
        try:
            car.env["PRIMER_REDIS_URL"] = with_user(services["PRIMER_REDIS_URL"], user, PASSWORD)
            yield car
        finally:
            redis_client.execute_command("ACL", "DELUSER", user)


def test_the_cache_runs_as_the_readme_acl_user(acl_sidecar: Sidecar) -> None:
    car = acl_sidecar
    limited = connect_redis(car.env["PRIMER_REDIS_URL"])
    for command in (("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("CONFIG", "GET", "*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.execute_command(*command)
    car.start_worker()
    car.start_listener()
    # the cold start warms the seed patterns through the lease functions (FUNCTION LOAD, FCALL)
    warm_keys = [car.keys.build(q) for q in SEED_WARM_PATTERNS]
    wait_for(lambda: car.present(warm_keys) == set(warm_keys), timeout=30, what="warm keys")
    car.insert_chunk("acl", "security", "0.90", "required")
    car.sync()
    keys = car.plant(Query(("security",)), Query(("process",)))
    car.execute("UPDATE megamind_chunks SET content = 'x' WHERE chunk_id = 'acl'")
    car.sync()
    assert car.present(keys) == {keys[1]}
    wait_for(lambda: car.present(warm_keys) == set(warm_keys), timeout=30, what="re-warmed keys")
    # status is healthy (exit 0) only with a month of partitions ahead (schema.sql's are old)
    assert car.cli("partitions", "ensure").returncode == 0
    status = wait_for(
        lambda: (done := car.cli("status", "--json")).returncode == 0 and done,
        what="a healthy status under the ACL user",
    )
    flush = car.cli("invalidate", "--all")
    assert flush.returncode == 0, flush.stderr
    assert car.present(keys) == set()
    assert_no_secret(*(p.output() for p in car.processes), status.stdout, status.stderr)


def test_the_broker_eviction_check_is_quiet_without_config(acl_sidecar: Sidecar) -> None:
    from adapters.broker import broker_eviction_warning

    settings = load_settings(
        {
            **acl_sidecar.env,
            "PRIMER_BROKER_URL": acl_sidecar.env["PRIMER_REDIS_URL"].replace("/0", "/1"),
        }
    )
    assert broker_eviction_warning(settings) is None


# ---- TLS ------------------------------------------------------------------------------------


def test_the_pipeline_over_tls_with_a_self_signed_ca(
    services: dict[str, str], mysql_params: dict[str, Any], tmp_path: Path
) -> None:
    tls_url = services["PRIMER_REDIS_TLS_URL"]
    bare = tls_url.split("?", 1)[0]
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        connect_redis(bare).ping()  # the CA is not in the system store
    cache = connect_redis(tls_url)
    assert cache.ping()
    broker = (
        bare.replace("/0", "/1")
        + f"?ssl_cert_reqs=required&ssl_ca_certs={services['PRIMER_REDIS_TLS_CA']}"
    )
    env = {**services, "PRIMER_REDIS_URL": tls_url, "PRIMER_BROKER_URL": broker}
    with isolated(Sidecar, env, mysql_params, cache, tmp_path) as car:
        car.start_worker()
        car.start_listener()
        car.insert_chunk("tls", "security", "0.90", "required")
        car.sync()
        keys = car.plant(Query(("security",)), Query(("process",)))
        car.execute("UPDATE megamind_chunks SET content = 'x' WHERE chunk_id = 'tls'")
        car.sync()
        assert car.present(keys) == {keys[1]}


# ---- secrets --------------------------------------------------------------------------------


def test_settings_and_errors_never_show_a_password(services: dict[str, str]) -> None:
    env = {
        "PRIMER_MYSQL_URL": f"mysql://u:{PASSWORD}@db:3306/megamind?ssl_mode=REQUIRED",
        "PRIMER_REDIS_URL": f"rediss://cache:{PASSWORD}@redis:6380/0",
        "PRIMER_BROKER_URL": f"amqps://rabbit:{PASSWORD}@mq:5671//",
    }
    settings = load_settings(env)
    assert_no_secret(repr(settings), str(settings))
    assert "***" in repr(settings)
    bad = {
        "PRIMER_MYSQL_URL": f"mysql://u:{PASSWORD}@db:notaport/megamind",
        "PRIMER_REDIS_URL": f"redis://u:{PASSWORD}@redis/notadb",
        "PRIMER_BROKER_URL": f"ftp://u:{PASSWORD}@mq/",
    }
    with pytest.raises(ConfigError) as raised:
        load_settings(bad)
    assert len(raised.value.problems) == 3
    assert_no_secret(str(raised.value))


def test_mysql_tls_options_reach_the_driver() -> None:
    base = "mysql://u:p@db:3306/megamind"
    settings = load_settings({"PRIMER_MYSQL_URL": f"{base}?ssl_ca=/ca.pem&ssl_mode=verify_ca"})
    assert settings.mysql.connect_kwargs()["ssl"] == {
        "ca": "/ca.pem",
        "check_hostname": False,
        "verify_mode": "required",
    }
    identity = load_settings({"PRIMER_MYSQL_URL": f"{base}?ssl_ca=/ca.pem"}).mysql
    assert identity.connect_kwargs()["ssl"]["check_hostname"] is True
    required = load_settings({"PRIMER_MYSQL_URL": f"{base}?ssl_mode=REQUIRED"}).mysql
    assert required.connect_kwargs()["ssl"]["verify_mode"] == "none"
    assert "ssl" not in load_settings({"PRIMER_MYSQL_URL": base}).mysql.connect_kwargs()
    with pytest.raises(ConfigError) as raised:
        load_settings({"PRIMER_MYSQL_URL": f"{base}?ssl_mode=sometimes&sslca=/x"})
    message = str(raised.value)
    assert "'sometimes'" in message and "'sslca'" in message


def test_status_shows_no_password(services: dict[str, str], tmp_path: Path) -> None:
    env = {
        **services,
        "PRIMER_REDIS_URL": with_user(services["PRIMER_REDIS_URL"], "nobody", PASSWORD),
    }
    result = cli(env, "status")
    assert result.returncode != 0  # the user does not exist: refused, and the error is shown
    assert_no_secret(result.stdout, result.stderr)


def test_the_broker_eviction_warning_hides_the_password(
    services: dict[str, str], redis_client: redis.Redis
) -> None:
    from adapters.broker import broker_eviction_warning

    user = unique("primer_broker_")
    redis_client.execute_command("ACL", "SETUSER", user, "on", f">{PASSWORD}", "+config|get")
    before = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        # the private Redis has no maxmemory: the policy alone evicts nothing
        redis_client.config_set("maxmemory-policy", "allkeys-lru")
        url = with_user(services["PRIMER_REDIS_URL"], user, PASSWORD)
        warning = broker_eviction_warning(load_settings({**services, "PRIMER_BROKER_URL": url}))
        assert warning is not None and "allkeys-lru" in warning and "***" in warning
        assert_no_secret(warning)
    finally:
        redis_client.config_set("maxmemory-policy", before)
        redis_client.execute_command("ACL", "DELUSER", user)
