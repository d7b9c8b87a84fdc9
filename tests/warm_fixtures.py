"""Shared pieces for the warming tests: one isolated sidecar environment (its own schema,
key prefix, state prefix and queues), generated primer data, and process helpers."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import redis

from config.query import Query
from tests.services import (
    Process,
    connect,
    service_env,
)
from tests.sidecar import Sidecar, isolated

# tasks.app reads its settings from os.environ on first use: give it the services' URLs when
# the test run was not started with .run/services.env sourced.
for _name, _value in service_env().items():
    os.environ.setdefault(_name, _value)

CATEGORIES = ("security", "development", "process", "cybersecurity", "testing")
LEVELS = ("required", "recommended", "optional")


class WarmEnv(Sidecar):
    """A sidecar for the warming tests: warm patterns on (the seed's, or extra_toml's), and
    in-process access to what the worker does (Runtime)."""

    def __init__(self, *args: Any, toml_extra: str = "", **kwargs: Any) -> None:
        super().__init__(*args, extra_toml=toml_extra, warm=True, **kwargs)
        from tasks.work.runtime import Runtime

        self.rt = Runtime(self.settings)
        self.broker = redis.Redis.from_url(self.settings.celery.broker_url)  # a Redis broker here

    @property
    def cache(self) -> redis.Redis:
        return self.redis

    def start_worker(self, concurrency: int = 2) -> Process:
        return super().start_worker(concurrency)

    def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        super().stop()
        self.rt.drop_db()

    # ---- the cache and the queues -------------------------------------------------------

    def sweeps(self) -> int:
        return int(self.cache.hget(f"{self.state_prefix}stats", "sweeps") or 0)

    def queued(self) -> int:
        return sum(int(self.broker.llen(f"{self.tag}.{q}")) for q in ("invalidate", "warm"))

    def messages(self, queue: str) -> list[dict[str, Any]]:
        """The task messages waiting in one of this environment's queues (oldest first)."""
        found = []
        for raw in reversed(self.broker.lrange(f"{self.tag}.{queue}", 0, -1)):
            message = json.loads(raw)
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append({"task": message["headers"]["task"], "args": args, **message["headers"]})
        return found


def warm_env(
    base_env: dict[str, str],
    mysql_params: dict[str, Any],
    cache: redis.Redis,
    workdir: Path,
    **options: Any,
) -> contextlib.AbstractContextManager[WarmEnv]:
    return isolated(WarmEnv, base_env, mysql_params, cache, workdir, **options)


# ---- data -------------------------------------------------------------------------------------


def seed_elements(conn: pymysql.Connection, count: int, rng: random.Random) -> list[str]:
    """`count` chunks covering what the query must get right: every category, NULL
    categories and priorities, other realms, equal priorities and equal created_at (ties),
    JSON columns, elements with and without metadata rows. Returns the chunk ids."""
    chunks, elements = [], []
    for n in range(count):
        chunk_id = f"c{n:05d}"
        realm = "GLOBAL" if rng.random() < 0.85 else "PROJECT"
        category = rng.choice(CATEGORIES) if rng.random() < 0.92 else None
        priority = None if rng.random() < 0.04 else f"{rng.randint(0, 100) / 100:.2f}"
        level = rng.choice(LEVELS) if rng.random() < 0.95 else None
        created = f"2025-07-{rng.randint(1, 3):02d} 10:00:00"  # few values: many ties
        chunks.append(
            (
                chunk_id,
                realm,
                f"content {n} {rng.random():.6f} ünïcode ✓",
                f"doc{n % 7}.md",
                None if n % 5 == 0 else f"/section/{n % 11}",
                category,
                priority,
                level,
                json.dumps(rng.sample(["python", "sql", "web", "ops"], rng.randint(0, 3))),
                None if n % 4 == 0 else json.dumps({"t": n, "tags": ["a", "b"][: n % 3]}),
                created,
            )
        )
        if rng.random() < 0.7:
            elements.append((f"ge{n:05d}", chunk_id, f"Title {n}", f"summary {n}"))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO megamind_chunks (chunk_id, realm_id, content, source_document, "
            "section_path, element_category, priority_score, enforcement_level, applies_to, "
            "tags, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            chunks,
        )
        cur.executemany(
            "INSERT INTO megamind_global_elements (element_id, chunk_id, title, summary) "
            "VALUES (%s, %s, %s, %s)",
            elements,
        )
    return [row[0] for row in chunks]


def random_query(rng: random.Random) -> Query:
    cats = tuple(rng.sample(CATEGORIES, rng.choice((0, 0, 1, 1, 2, 3))))
    threshold = rng.choice((0.0, 0.0, 0.25, 0.5, 0.8, 0.85, 0.123, rng.randint(0, 100) / 100))
    level = rng.choice(("all", "all", *LEVELS))
    return Query(cats, threshold, level, limit=rng.choice((1, 5, 20, 50, 100, 150)))


def fresh(env: WarmEnv, query: Query) -> dict:
    """The response a fresh query gives, through JSON and back (as a reader sees it)."""
    from adapters.mysql.primer_query import fresh_response
    from core.response import decode, encode

    return decode(encode(fresh_response(env.rt.db(), env.settings, query), compression=False))


def cached(env: WarmEnv, query: Query) -> dict | None:
    from core.response import decode

    raw = env.cache.get(env.keys.build(query))
    return None if raw is None else decode(raw)


def same(a: dict | None, b: dict | None) -> bool:
    from core.response import comparable

    if a is None or b is None:
        return False
    return comparable(a) == comparable(b)


class Writers:
    """Threads that each make `count` committed updates to warm-pattern elements."""

    def __init__(self, mysql_params: dict[str, Any], database: str, ids: list[str]) -> None:
        self.mysql_params = mysql_params
        self.database = database
        self.ids = ids
        self.errors: list[BaseException] = []

    def run(self, threads: int, count: int, seed: int) -> None:
        workers = [
            threading.Thread(target=self._write, args=(count, seed + n)) for n in range(threads)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(120)
        assert not self.errors, self.errors

    def _write(self, count: int, seed: int) -> None:
        rng = random.Random(seed)
        try:
            conn = connect(self.mysql_params, self.database)
            with conn.cursor() as cur:
                for n in range(count):
                    chunk_id = rng.choice(self.ids)
                    column, value = rng.choice(
                        (
                            ("content", f"rewritten {seed}-{n}"),
                            ("priority_score", f"{rng.randint(0, 100) / 100:.2f}"),
                            ("enforcement_level", rng.choice(LEVELS)),
                            ("element_category", rng.choice(CATEGORIES)),
                        )
                    )
                    cur.execute(
                        f"UPDATE megamind_chunks SET {column} = %s WHERE chunk_id = %s",
                        (value, chunk_id),
                    )
                    time.sleep(rng.uniform(0, 0.004))  # pacing: spread commits over warms
            conn.close()
        except BaseException as exc:  # reported by run()
            self.errors.append(exc)
