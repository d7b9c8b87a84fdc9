"""A whole sidecar for integration tests: its own schema, key prefix, state prefix and queues,
a real Celery worker and a real listener (subprocesses), and a way to wait for the pipeline."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pymysql
import redis
from pymysql.cursors import DictCursor

from adapters.redis.connection import is_cluster
from config import Settings, load_settings
from config.query import Query
from config.settings import DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat, checkpoint_key
from core.position import Checkpoint, GtidPosition, Position, position_reached
from core.predicate import ElementImage
from tests.services import (
    VENV_BIN,
    Process,
    child_env,
    cli,
    connect,
    delete_prefix,
    delete_queues,
    scratch_database,
    unique,
    wait_for,
)

_sync_ids = itertools.count(1)
S = TypeVar("S", bound="Sidecar")
SYNC_IMAGE_PRIORITY = Decimal("0.00")
PLANTED = b"cached"  # the value plant() writes: a key that holds it was not invalidated


@dataclass
class Sidecar:
    """One sidecar's worth of isolation (schema, key and state prefixes, queues) and the
    worker and listener processes it runs; everything it started is stopped by stop()."""

    base_env: dict[str, str]
    database: str
    conn: pymysql.Connection
    redis: redis.Redis
    workdir: Path
    tag: str = field(default_factory=lambda: unique("t"))
    extra_toml: str = ""
    listener_toml: str = ""  # more [listener] settings, one per line
    cache_toml: str = ""  # more [cache] settings, one per line
    second_pass_ms: int = 0
    leader_ttl_ms: int = 3000  # a stall (SIGSTOP) longer than this costs the lead
    warm: bool = False  # False: no warm patterns, so nothing but the test writes keys
    refresh: bool = False  # False: no refresh of hot keys after a sweep (they stay deleted)
    broker_url: str = ""  # "": the services' broker (a Redis db); or amqp://, a private Redis
    redeliver_after_s: int = 30
    worker: Process | None = None
    listener: Process | None = None
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key_prefix = f"{self.tag}:megamind:primer:"
        self.state_prefix = f"{self.tag}:primer-cache:"
        self.keys = KeyFormat(self.key_prefix, DEFAULT_KEY_TEMPLATE)
        self.config = self.workdir / f"{self.tag}.toml"
        self.config.write_text(
            f'[cache]\nkey_prefix = "{self.key_prefix}"\nstate_prefix = "{self.state_prefix}"\n'
            f"second_pass_ms = {self.second_pass_ms}\n"
            + self.cache_toml
            + f'[celery]\nqueue_prefix = "{self.tag}"\n'
            f"[listener]\nleader_ttl_ms = {self.leader_ttl_ms}\n"
            f"redeliver_after_s = {self.redeliver_after_s}\n"
            + self.listener_toml
            + ("" if self.warm else "[warm]\npatterns = []\n")
            + ("" if self.refresh else "[refresh]\nmax_keys = 0\n")
            + self.extra_toml
        )
        # each source's URL (PRIMER_MYSQL_URL may list several) with the scratch database
        mysql_url = ",".join(
            url.rsplit("/", 1)[0] + f"/{self.database}"
            for url in self.base_env["PRIMER_MYSQL_URL"].split(",")
        )
        extra = {"PRIMER_BROKER_URL": self.broker_url} if self.broker_url else {}
        self.env = child_env(
            self.base_env, PRIMER_MYSQL_URL=mysql_url, PRIMER_CONFIG=str(self.config), **extra
        )
        self.settings: Settings = load_settings(self.env)
        self.queues = [f"{self.tag}.{q}" for q in ("invalidate", "warm", "maintenance")]

    # ---- processes ----------------------------------------------------------------------

    def start_worker(
        self,
        concurrency: int = 1,
        metrics_port: int = 0,
        extra: tuple[str, ...] = (),
        name: str = "",
    ) -> Process:
        """A Celery worker on the sidecar's queues; several workers need distinct `name`s."""
        queues = ",".join(self.queues)
        env = (
            {**self.env, "PRIMER_WORKER_METRICS_PORT": str(metrics_port)}
            if metrics_port
            else self.env
        )
        # Pipeline tests use one process: tasks then run in publish order, so a later
        # sentinel proves that earlier work is done.
        worker = self._start(
            [
                str(VENV_BIN / "celery"),
                "-A",
                "tasks",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "--loglevel",
                "INFO",
                "-n",
                f"{name or self.tag}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                *extra,
            ],
            env,
            "worker",
            ready="ready",
        )
        self.worker = worker
        return worker

    def start_beat(self) -> Process:
        """Celery beat with this sidecar's schedule (its own schedule file)."""
        schedule = self.workdir / f"{self.tag}-beat-schedule"
        args = [str(VENV_BIN / "celery"), "-A", "tasks", "beat", "--loglevel", "INFO"]
        return self._start([*args, "--schedule", str(schedule)], self.env, "beat", ready="beat")

    def start_listener(self, server_id: int | None = None, metrics_port: int = 0) -> Process:
        """A listener; without `server_id` it draws its own, as every replica of a deployment
        with one configuration does."""
        env = dict(self.env)
        if server_id:
            env["PRIMER_SERVER_ID"] = str(server_id)
        if metrics_port:
            env["PRIMER_METRICS_PORT"] = str(metrics_port)
        self.listener = self._start(
            [str(VENV_BIN / "primer-cache"), "listen"], env, "listener", ready="streaming from"
        )
        return self.listener

    def spawn_listener(self) -> Process:
        """A listener started exactly as every replica of a deployment is; returns at once."""
        return self._start([str(VENV_BIN / "primer-cache"), "listen"], self.env, "listener")

    def start_listener_standby(self) -> Process:
        """A second replica, started exactly as the first (no setting of its own: it draws
        its own server_id), that should wait for the leader lock; returns once it waits."""
        proc = self.spawn_listener()
        wait_for(
            lambda: "waiting" in proc.output() or not proc.alive(),
            timeout=60,
            what="the standby listener to wait for the lock",
        )
        assert proc.alive(), proc.output()
        return proc

    def _start(self, args: list[str], env: dict[str, str], name: str, ready: str = "") -> Process:
        log = self.workdir / f"{self.tag}-{name}{len(self.processes)}.log"
        proc = Process(args, env, log)
        self.processes.append(proc)
        if ready:
            wait_for(
                lambda: ready in proc.output() or not proc.alive(),
                timeout=60,
                what=f"{name} to log {ready!r}",
            )
            assert proc.alive(), proc.output()
        return proc

    def kill_listener(self) -> None:
        assert self.listener is not None
        self.listener.stop(signal.SIGKILL)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        delete_prefix(self.redis, f"{self.tag}:")
        delete_queues(self.settings.celery.broker_url, self.queues)

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return cli(self.env, *args, timeout=timeout)

    # ---- database -----------------------------------------------------------------------

    def execute(self, sql: str, args: Any = None) -> int:
        """Run one statement; return the rows it changed (0: no row event in the binlog)."""
        with self.conn.cursor() as cur:
            return int(cur.execute(sql, args))

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
            pipe.set(key, PLANTED)
        pipe.execute()
        return keys

    def present(self, keys: list[str]) -> set[str]:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return {key for key, there in zip(keys, pipe.execute(), strict=True) if there}

    def checkpoint(self) -> dict[str, Any] | None:
        raw = self.redis.get(checkpoint_key(self.state_prefix))
        return json.loads(raw) if raw else None

    def checkpoint_position(self) -> Position | None:
        """The stored checkpoint's position (None: no checkpoint)."""
        stored = self.checkpoint()
        return Checkpoint.from_json(stored).position if stored else None

    def gtid_now(self) -> str:
        with self.conn.cursor() as cur:
            cur.execute("SELECT @@gtid_binlog_pos")
            return str(cur.fetchone()[0])

    def checkpointed(self, timeout: float = 30.0) -> None:
        """Wait until the listener's checkpoint covers every commit made so far (a restart
        then replays nothing); call after sync(), which makes the work done."""
        target = self.gtid_now()
        wait_for(
            lambda: position_reached(self.checkpoint_position(), GtidPosition(target)),
            timeout=timeout,
            what=f"the checkpoint to reach GTID {target}",
        )

    def done_or_held_for_replicas(self, timeout: float) -> None:
        """Wait until the batches of every commit so far are done (the checkpoint passed them:
        what happens without WAIT) or the worker holds them back for the cache Redis's
        replicas (ReplicasBehind: with WAIT)."""
        target = GtidPosition(self.gtid_now())
        worker = self.worker
        assert worker is not None
        wait_for(
            lambda: (
                position_reached(self.checkpoint_position(), target)
                or "ReplicasBehind" in worker.output()
            ),
            timeout=timeout,
            what="the batches done, or held back for the replica",
        )

    def sync(self, timeout: float = 30.0) -> ElementImage:
        """Wait until the pipeline has processed every commit made so far.

        Commits a sentinel chunk and waits for the key it affects to go; the worker runs one
        task at a time in publish order, so everything committed before is done too. On a
        Redis Cluster the primaries are swept concurrently: the sentinel's key may go while
        another primary's part of the same sweep still runs, so a second sentinel, committed
        after the first is gone and so in a later task, proves the first task finished.
        The sentinel's key alone does not prove it: the listener's fast lane may delete it
        before any sweep, and with several pool children the sentinel's batch may finish
        before an earlier one. So the checkpoint, which passes only batches that are done, is
        waited for as well; except with read replicas configured, where a batch whose replica
        is held back is swept but not done until its follow-up pass (the tests there wait
        for what they need themselves).
        Returns the sentinel's image: a test's model of what changed must include it (every
        sentinel's image affects the same keys: all categories, threshold 0, level optional).
        """
        rounds = 2 if is_cluster(self.redis) else 1
        for _ in range(rounds):
            image = self._sentinel(timeout)
        if "[replicas]" not in self.extra_toml:
            self.checkpointed(timeout)
        return image

    def _sentinel(self, timeout: float) -> ElementImage:
        n = next(_sync_ids)
        category = f"zzsync{n}"
        (key,) = self.plant(Query((category,)))
        self.insert_chunk(f"sync-{self.tag}-{n}", category, str(SYNC_IMAGE_PRIORITY), "optional")
        wait_for(
            lambda: self.redis.get(key) != PLANTED,  # deleted (or refreshed)
            timeout=timeout,
            what=f"sentinel {key} to be invalidated",
        )
        return ElementImage(category, SYNC_IMAGE_PRIORITY, "optional")


@contextmanager
def isolated(
    kind: type[S],
    base_env: dict[str, str],
    mysql_params: dict[str, Any],
    client: redis.Redis,
    workdir: Path,
    **options: Any,
) -> Iterator[S]:
    """A sidecar of `kind` in a scratch schema; its processes, keys and schema go after."""
    admin = connect(mysql_params)
    try:
        with scratch_database(admin) as name:
            conn = connect(mysql_params, name)
            car = kind(base_env, name, conn, client, workdir, **options)
            try:
                yield car
            finally:
                car.stop()
                conn.close()
    finally:
        admin.close()
