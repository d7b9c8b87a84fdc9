"""A whole sidecar for integration tests: its own schema, key prefix, state prefix and queues,
a real Celery worker and a real listener (subprocesses), and a way to wait for the pipeline."""

from __future__ import annotations

import itertools
import random
import signal
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import redis
from pymysql.cursors import DictCursor

from config.query import Query
from config.settings import DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat
from core.predicate import ElementImage
from tests.services import VENV_BIN, Process, child_env, delete_prefix, unique, wait_for

_sync_ids = itertools.count(1)
SYNC_IMAGE_PRIORITY = Decimal("0.00")


@dataclass
class Sidecar:
    base_env: dict[str, str]
    database: str
    conn: pymysql.Connection
    redis: redis.Redis
    workdir: Path
    tag: str = field(default_factory=lambda: unique("t"))
    extra_toml: str = ""
    worker: Process | None = None
    listener: Process | None = None
    listeners_started: int = 0

    def __post_init__(self) -> None:
        self.key_prefix = f"{self.tag}:megamind:primer:"
        self.state_prefix = f"{self.tag}:primer-cache:"
        self.keys = KeyFormat(self.key_prefix, DEFAULT_KEY_TEMPLATE)
        toml = self.workdir / f"{self.tag}.toml"
        toml.write_text(
            f'[cache]\nkey_prefix = "{self.key_prefix}"\nstate_prefix = "{self.state_prefix}"\n'
            "second_pass_ms = 0\n"
            f'[celery]\nqueue_prefix = "{self.tag}"\n'
            "[listener]\nleader_ttl_ms = 3000\n"
            "[warm]\npatterns = []\n" + self.extra_toml
        )
        mysql_url = self.base_env["PRIMER_MYSQL_URL"].rsplit("/", 1)[0] + f"/{self.database}"
        self.env = child_env(self.base_env, PRIMER_MYSQL_URL=mysql_url, PRIMER_CONFIG=str(toml))

    # ---- processes ----------------------------------------------------------------------

    def start_worker(self, concurrency: int = 1) -> None:
        queues = ",".join(f"{self.tag}.{q}" for q in ("invalidate", "warm", "maintenance"))
        # Tests use one process: tasks then run in publish order, so a later sentinel proves
        # that earlier work is done.
        self.worker = Process(
            [
                str(VENV_BIN / "celery"),
                "-A",
                "tasks",
                "worker",
                "-Q",
                queues,
                "-c",
                "1",
                "--loglevel",
                "INFO",
                "-n",
                f"{self.tag}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            self.env,
            self.workdir / f"{self.tag}-worker.log",
        )
        wait_for(
            lambda: "ready" in self.worker.output() or not self.worker.alive(),
            timeout=60,
            what="celery worker ready",
        )
        assert self.worker.alive(), self.worker.output()

    def start_listener(self, server_id: int | None = None, metrics_port: int = 0) -> Process:
        self.listeners_started += 1
        server_id = server_id or random.randint(10_000, 2**31)
        env = {**self.env, "PRIMER_SERVER_ID": str(server_id)}
        if metrics_port:
            env["PRIMER_METRICS_PORT"] = str(metrics_port)
        log = self.workdir / f"{self.tag}-listener{self.listeners_started}.log"
        self.listener = Process([str(VENV_BIN / "primer-cache"), "listen"], env, log)
        listener = self.listener
        wait_for(
            lambda: "streaming from" in listener.output() or not listener.alive(),
            timeout=60,
            what="listener streaming",
        )
        assert listener.alive(), listener.output()
        return listener

    def start_listener_standby(self) -> Process:
        """A second replica (own server_id) that should wait for the leader lock."""
        self.listeners_started += 1
        env = {**self.env, "PRIMER_SERVER_ID": str(random.randint(10_000, 2**31))}
        log = self.workdir / f"{self.tag}-listener{self.listeners_started}.log"
        return Process([str(VENV_BIN / "primer-cache"), "listen"], env, log)

    def kill_listener(self) -> None:
        assert self.listener is not None
        self.listener.stop(signal.SIGKILL)

    def stop(self) -> None:
        for proc in (self.listener, self.worker):
            if proc is not None:
                proc.stop()
        delete_prefix(self.redis, f"{self.tag}:")
        broker = redis.Redis.from_url(self.base_env["PRIMER_BROKER_URL"])
        delete_prefix(broker, f"{self.tag}.")

    # ---- database -----------------------------------------------------------------------

    def execute(self, sql: str, args: Any = None) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)

    def image(self, chunk_id: str) -> ElementImage | None:
        with self.conn.cursor(DictCursor) as cur:
            cur.execute(
                "SELECT realm_id, element_category, priority_score, enforcement_level "
                "FROM megamind_chunks WHERE chunk_id = %s",
                (chunk_id,),
            )
            row = cur.fetchone()
        if row is None or row["realm_id"] != "GLOBAL":
            return None
        return ElementImage(
            row["element_category"], row["priority_score"], row["enforcement_level"]
        )

    def insert_chunk(
        self,
        chunk_id: str,
        category: str | None = "security",
        priority: str | None = "0.50",
        level: str | None = "required",
        realm: str = "GLOBAL",
        title: str | None = None,
    ) -> None:
        self.execute(
            "INSERT INTO megamind_chunks (chunk_id, realm_id, content, element_category, "
            "priority_score, enforcement_level, embedding, applies_to, tags) "
            "VALUES (%s, %s, %s, %s, %s, %s, '[0.1, 0.2]', '[\"python\"]', '[\"t\"]')",
            (chunk_id, realm, f"content of {chunk_id}", category, priority, level),
        )
        if title is not None:
            self.execute(
                "INSERT INTO megamind_global_elements (element_id, chunk_id, title, summary) "
                "VALUES (%s, %s, %s, 's')",
                (f"ge_{chunk_id}", chunk_id, title),
            )

    # ---- keys ---------------------------------------------------------------------------

    def plant(self, *queries: Query) -> list[str]:
        keys = [self.keys.build(q) for q in queries]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, b"cached")
        pipe.execute()
        return keys

    def present(self, keys: list[str]) -> set[str]:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return {key for key, there in zip(keys, pipe.execute(), strict=True) if there}

    def sync(self, timeout: float = 30.0) -> ElementImage:
        """Wait until the pipeline has processed every commit made so far.

        Commits a sentinel chunk and waits for the key it affects to go; the worker runs one
        task at a time in publish order, so everything committed before is done too.
        Returns the sentinel's image: a test's model of what changed must include it.
        """
        n = next(_sync_ids)
        category = f"zzsync{n}"
        (key,) = self.plant(Query((category,)))
        self.insert_chunk(f"sync-{self.tag}-{n}", category, str(SYNC_IMAGE_PRIORITY), "optional")
        wait_for(
            lambda: not self.redis.exists(key),
            timeout=timeout,
            what=f"sentinel {key} to be invalidated",
        )
        return ElementImage(category, SYNC_IMAGE_PRIORITY, "optional")
