"""Real services for tests: the private MariaDB and Redis that scripts/services.sh starts,
throwaway schemas and key prefixes, and subprocesses (listener, Celery worker) with deadlines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import redis

from config.mysql import MySQLSettings
from config.sentinel import is_sentinel_url, parse_sentinel_url

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / ".run" / "services.env"
SCHEMA = ROOT / "sql" / "schema.sql"
VENV_BIN = Path(sys.executable).parent


def service_env() -> dict[str, str]:
    """PRIMER_* service URLs: from the environment, else from .run/services.env."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PRIMER_")}
    if "PRIMER_MYSQL_URL" not in env and ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            name, _, value = line.partition("=")
            env.setdefault(name.strip(), value.strip())
    return env


def mysql_settings(
    env: dict[str, str], name: str = "PRIMER_MYSQL_URL", *, need_database: bool = True
) -> MySQLSettings:
    """The MySQL settings in `env[name]` (a service URL); an AssertionError naming what is
    wrong with it."""
    problems: list[str] = []
    parsed = MySQLSettings.from_url(env.get(name, ""), problems, name, need_database=need_database)
    assert parsed is not None, problems
    return parsed


def wait_for(
    condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `condition` until it returns a truthy value; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """GET http://127.0.0.1:<port><path>: (status, body); 503 is an answer, not an error."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def fast_lane_known(port: int) -> float:
    """A listener's primer_cache_listener_fast_lane_known_keys, off its metrics endpoint."""
    _, text = scrape(port)
    prefix = "primer_cache_listener_fast_lane_known"
    rows = [row for row in text.splitlines() if row.startswith(prefix)]
    return float(rows[0].split()[-1]) if rows else 0.0


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def connect(mysql_url_parts: dict[str, Any], database: str | None = None) -> pymysql.Connection:
    return pymysql.connect(autocommit=True, database=database, **mysql_url_parts)


def schema_statements() -> list[str]:
    text = "\n".join(
        line for line in SCHEMA.read_text().splitlines() if not line.strip().startswith("--")
    )
    return [statement.strip() for statement in text.split(";") if statement.strip()]


def revive(conn: pymysql.Connection) -> None:
    """Open `conn` again if its server went away meanwhile (a test restarted it)."""
    try:
        conn.ping()
    except pymysql.Error:
        conn.connect()


@contextmanager
def scratch_database(admin: pymysql.Connection, name: str | None = None) -> Iterator[str]:
    """A schema created for one test (with the primer tables), dropped afterwards."""
    name = name or unique("pct_")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(f"USE `{name}`")
        for statement in schema_statements():
            cur.execute(statement)
    try:
        yield name
    finally:
        revive(admin)  # the test may have restarted a server of its own
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Remove the keys a test wrote under its own unique prefix (never a flush)."""
    batch = [key for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(batch), 500):
        client.unlink(*batch[start : start + 500])


def delete_queues(broker_url: str, queues: list[str]) -> None:
    """Remove a test's own queues from a broker (Redis or RabbitMQ), whatever they hold;
    a broker that is gone (a private one the test stopped) has nothing to remove."""
    from kombu import Connection
    from kombu.exceptions import OperationalError

    options: dict[str, Any] = {}
    if is_sentinel_url(broker_url):
        parsed = parse_sentinel_url(broker_url, "broker", [])
        assert parsed is not None
        broker_url, options = parsed.kombu_url(), parsed.kombu_options()
    try:
        with Connection(broker_url, connect_timeout=3, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1)
            for name in queues:
                with conn.channel() as channel:
                    channel.queue_delete(name)
    except (OperationalError, OSError):
        pass


class Process:
    """A subprocess with its output in a file; stopped by its own PID only."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # its own process group: the worker's pool children go with it
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._fh.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._fh.close()


def child_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRIMER_", "MEGAMIND_"))}
    env.update(base)
    env.update(extra)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(
    env: dict[str, str], *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "primer-cache"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
