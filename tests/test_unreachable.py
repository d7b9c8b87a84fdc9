"""A server away is one line naming it (password hidden) and the cause, exit 1; never a
traceback; `status --json` still prints JSON, unhealthy. Driven for real: the CLI against a
closed port, a private Redis and a private MariaDB started and then stopped (never the shared
servers), and a broker of each kind (Redis, AMQP) that is not there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import redis

from tests.private_servers import PrivateMariaDB, PrivateRedis
from tests.services import (
    VENV_BIN,
    Process,
    child_env,
    cli,
    delete_prefix,
    delete_queues,
    free_port,
    unique,
    wait_for,
)

SECRET = "sekret-pw"


def one_line_failure(result: subprocess.CompletedProcess[str], naming: str) -> str:
    """The failure line of a command that could not reach a server: exit 1, no traceback, the
    password hidden, one `primer-cache:` line (the last) naming the server."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    assert result.returncode == 1, output
    lines = [line for line in result.stderr.splitlines() if line.startswith("primer-cache")]
    assert len(lines) == 1, output
    assert result.stderr.rstrip().splitlines()[-1] == lines[0], output
    assert naming in lines[0], output
    return lines[0]


def unhealthy_json(result: subprocess.CompletedProcess[str], naming: str) -> dict:
    """`status --json` with a server away: JSON on stdout, healthy false, the server named."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    assert result.returncode == 1, output
    info = json.loads(result.stdout)
    assert info["healthy"] is False
    assert any(naming in problem for problem in info["problems"]), info["problems"]
    return info


@pytest.fixture(scope="module")
def stopped_redis_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private Redis, started and stopped again: its URL (with a password to hide)."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    server.stop()
    return f"redis://:{SECRET}@127.0.0.1:{server.port}/0"


@pytest.fixture(scope="module")
def stopped_mariadb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private MariaDB, started and stopped again: its URL (with a password)."""
    server = PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    server.stop()
    return f"mysql://root:{SECRET}@127.0.0.1:{server.port}/megamind"


def closed_redis_url() -> str:
    return f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"


CACHE_COMMANDS = [
    ("check",),
    ("invalidate", "--all"),
    ("invalidate", "--category", "security"),
    ("functions", "load"),
    ("listen",),
]


@pytest.mark.parametrize("args", CACHE_COMMANDS, ids=" ".join)
def test_cache_redis_on_a_closed_port(services: dict[str, str], args: tuple[str, ...]) -> None:
    url = closed_redis_url()
    env = child_env(services, PRIMER_REDIS_URL=url, PRIMER_BROKER_URL=services["PRIMER_BROKER_URL"])
    one_line_failure(cli(env, *args, timeout=60), url.split("@")[1])


def test_status_with_the_cache_redis_on_a_closed_port(services: dict[str, str]) -> None:
    url = closed_redis_url()
    where = url.split("@")[1]
    env = child_env(services, PRIMER_REDIS_URL=url, PRIMER_BROKER_URL=services["PRIMER_BROKER_URL"])
    info = unhealthy_json(cli(env, "status", "--json", timeout=60), where)
    assert info["cache_read"] is False
    assert info["leader"] is None
    # The text report: UNHEALTHY, the server as one of its problems, nothing else about it.
    text = cli(env, "status", timeout=60)
    assert text.returncode == 1 and "Traceback" not in text.stdout + text.stderr
    assert [line for line in text.stdout.splitlines() if where in line] == [
        f"  - {info['problems'][0]}"
    ], text.stdout
    assert "no listener holds the leader lock" not in text.stdout  # unknown, not absent


@pytest.mark.parametrize("args", [("status", "--json"), ("invalidate", "--all"), ("listen",)])
def test_a_stopped_redis(
    services: dict[str, str], stopped_redis_url: str, args: tuple[str, ...]
) -> None:
    env = child_env(
        services,
        PRIMER_REDIS_URL=stopped_redis_url,
        PRIMER_BROKER_URL=services["PRIMER_BROKER_URL"],
    )
    result = cli(env, *args, timeout=60)
    where = stopped_redis_url.split("@")[1]
    if args == ("status", "--json"):
        unhealthy_json(result, where)
    else:
        one_line_failure(result, where)


@pytest.mark.parametrize(
    "args",
    [
        ("check",),
        ("invalidate", "--element", "1"),
        ("partitions", "ensure", "--dry-run"),
        ("partitions", "list"),
        ("listen",),
        ("status", "--json"),
    ],
    ids=" ".join,
)
def test_a_stopped_mariadb(
    services: dict[str, str], stopped_mariadb_url: str, args: tuple[str, ...]
) -> None:
    env = child_env(services, PRIMER_MYSQL_URL=stopped_mariadb_url)
    result = cli(env, *args, timeout=60)
    where = stopped_mariadb_url.replace(SECRET, "***")
    if args == ("status", "--json"):
        unhealthy_json(result, where)
    else:
        assert "MySQL" in one_line_failure(result, where)


def test_mysql_on_a_closed_port(services: dict[str, str]) -> None:
    url = f"mysql://root:{SECRET}@127.0.0.1:{free_port()}/megamind"
    env = child_env(services, PRIMER_MYSQL_URL=url)
    one_line_failure(cli(env, "check", timeout=60), url.replace(SECRET, "***"))


BROKERS = {
    "redis": lambda port: f"redis://:{SECRET}@127.0.0.1:{port}/1",
    "amqp": lambda port: f"amqp://guest:{SECRET}@127.0.0.1:{port}//",
}


@pytest.mark.parametrize("kind", sorted(BROKERS))
def test_an_unreachable_broker(services: dict[str, str], kind: str) -> None:
    url = BROKERS[kind](free_port())
    env = child_env(services, PRIMER_BROKER_URL=url)
    shown = url.replace(SECRET, "***")
    line = one_line_failure(cli(env, "warm", "--all", "--timeout", "5", timeout=60), shown)
    assert "broker" in line
    unhealthy_json(cli(env, "status", "--json", timeout=60), shown)


def test_the_worker_keeps_retrying_an_unreachable_broker_without_tracebacks(
    services: dict[str, str], tmp_path: Path
) -> None:
    """A long-running process backs off: a line per attempt, never a traceback, never an
    exit; the password hidden in each line."""
    url = BROKERS["redis"](free_port())
    env = child_env(services, PRIMER_BROKER_URL=url)
    worker = Process(
        [str(VENV_BIN / "celery"), "-A", "tasks", "worker", "--concurrency", "1", "-l", "INFO"],
        env,
        tmp_path / "worker.log",
    )
    try:
        wait_for(
            lambda: worker.output().count("Cannot connect to") >= 2 or not worker.alive(),
            timeout=60,
            what="two connection attempts of the worker",
        )
        output = worker.output()
        assert worker.alive(), output
        assert "Traceback" not in output, output
        assert SECRET not in output, output
    finally:
        worker.stop()


def test_a_warm_that_times_out_is_one_line_and_a_quiet_exit(
    services: dict[str, str], tmp_path: Path
) -> None:
    """No worker consumes the queue: the wait times out; the exit prints no traceback (a Redis
    result backend unsubscribed during interpreter shutdown and printed one)."""
    tag = unique("wt")
    toml = tmp_path / "warm.toml"
    toml.write_text(f'[celery]\nqueue_prefix = "{tag}"\n')
    env = child_env(services, PRIMER_CONFIG=str(toml))
    try:
        done = cli(env, "warm", "--all", "--timeout", "1", timeout=60)
    finally:
        delete_queues(services["PRIMER_BROKER_URL"], [f"{tag}.warm"])
    assert "timed out after 1 s waiting for the warm of" in one_line_failure(done, "")


def test_the_listener_keeps_retrying_an_unreachable_broker_one_line_each(
    services: dict[str, str], tmp_path: Path
) -> None:
    """Once running, the listener backs off: one line per attempt naming the broker
    (password hidden), never a traceback, never an exit."""
    tag = unique("lr")
    toml = tmp_path / "listener.toml"
    toml.write_text(
        f'[cache]\nkey_prefix = "{tag}:megamind:primer:"\nstate_prefix = "{tag}:pc:"\n'
        f'[celery]\nqueue_prefix = "{tag}"\n[listener]\nleader_ttl_ms = 1000\n'
        "[warm]\npatterns = []\n"
    )
    url = BROKERS["amqp"](free_port())
    env = child_env(services, PRIMER_BROKER_URL=url, PRIMER_CONFIG=str(toml))
    env["PRIMER_SERVER_ID"] = str(free_port() + 100_000)
    listener = Process([str(VENV_BIN / "primer-cache"), "listen"], env, tmp_path / "l.log")
    shown = url.replace(SECRET, "***")
    try:
        wait_for(
            lambda: listener.output().count(f"broker {shown}") >= 2 or not listener.alive(),
            timeout=90,
            what="two reconnect lines naming the broker",
        )
        output = listener.output()
        assert listener.alive(), output
        assert "Traceback" not in output and SECRET not in output, output
        retries = [line for line in output.splitlines() if "reconnecting in" in line]
        assert retries and all(f"broker {shown}" in line for line in retries), retries
    finally:
        listener.stop()
        delete_prefix(redis.Redis.from_url(services["PRIMER_REDIS_URL"]), f"{tag}:")


def test_a_redis_database_the_server_does_not_have(
    services: dict[str, str], tmp_path: Path
) -> None:
    """Settings allow 0..15 (Redis's default); a server started with fewer databases refuses
    the SELECT: one line naming it, exit 1."""
    server = PrivateRedis(tmp_path, options=("--databases", "2"))
    server.start()
    try:
        url = f"redis://:{SECRET}@127.0.0.1:{server.port}/5"
        env = child_env(
            services, PRIMER_REDIS_URL=url, PRIMER_BROKER_URL=services["PRIMER_BROKER_URL"]
        )
        line = one_line_failure(cli(env, "check", timeout=60), f"127.0.0.1:{server.port}/5")
        assert "DB index is out of range" in line
    finally:
        server.stop()
