"""Warming, measured: what the sidecar buys a primer server that reads through the cache.

    set -a; . .run/services.env; set +a; python -m bench.bench_warming

1. A simulated primer server (reader threads: GET the key, on a miss query the database and
   SET the response with the seed's TTL, bump access_count/last_accessed of the elements it
   served, as the real server does) under bursts of element changes: hit rate, and stale
   reads (a hit whose content differs from the database once writes were quiet for 1 s),
   WITH the sidecar (listener + worker) and WITHOUT it, same data, same schedule.
2. Commit -> fresh warm value in Redis, p50/p99.
3. Warming with 10,000 chunks in the table: every seed pattern, a 50-element pattern and a
   500-element full-metadata pattern, as ratios of the seed's targets (1000 ms, 5000 ms).

Everything runs in throwaway schemas, key prefixes and queues, removed afterwards.
"""

from __future__ import annotations

import logging
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import redis

from config.query import SEED_WARM_PATTERNS, Query
from core.response import build_response, comparable, decode, encode
from tests.services import connect, mysql_settings, service_env, wait_for
from tests.warm_fixtures import WarmEnv, seed_elements, warm_env

READ_PATTERNS = (
    *SEED_WARM_PATTERNS,
    Query(("security",)),
    Query(("development",), enforcement_level="required"),
    Query(),
    Query(("testing",), priority_threshold=0.5),
    Query(("process", "cybersecurity"), limit=20),
)
READERS = 4
READ_INTERVAL_S = 0.05  # per reader: 80 reads/s in all, far above the seed's 100/minute
BURSTS = 5
BURST_WRITES = 20
QUIET_S = 2.5  # after each burst; reads are judged from 1 s after the last write
JUDGE_AFTER_S = 1.0
IGNORED = ("access_count", "last_accessed", "updated_at")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- 1. the primer server reading through the cache -------------------------------------------


@dataclass
class ReadStats:
    hits: int = 0
    misses: int = 0
    judged: int = 0
    stale: int = 0
    busy: int = 0  # lease readers: `busy` answers polled while another reader filled

    def add(self, other: ReadStats) -> None:
        self.hits += other.hits
        self.misses += other.misses
        self.judged += other.judged
        self.stale += other.stale
        self.busy += other.busy

    @property
    def hit_rate(self) -> float:
        return self.hits / max(self.hits + self.misses, 1)


class Clock:
    """The writer's schedule, as readers see it: whether a read may be judged for staleness."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writing = False
        self.last_write = time.monotonic()
        self.epoch = 0  # bumped at each burst start, so a judgement spanning one is dropped

    def quiet_epoch(self) -> int | None:
        with self.lock:
            if self.writing or time.monotonic() - self.last_write < JUDGE_AFTER_S:
                return None
            return self.epoch


class PrimerServer:
    """One reader thread of the simulated primer server. It fills misses from `read_from`
    (a read replica's connection parameters; default the primary) and judges staleness
    against the primary, where it also writes its access-count bumps. It reads with GET and
    fills with a plain SET (the stale-set race the second pass covers); bench_leases's reader
    overrides lookup() and store() to read and fill under a lease."""

    def __init__(
        self,
        env: WarmEnv,
        mysql: dict[str, Any],
        clock: Clock,
        seed: int,
        read_from: dict[str, Any] | None = None,
        patterns: tuple[Query, ...] = READ_PATTERNS,
        weights: tuple[float, ...] | None = None,
    ) -> None:
        self.env = env
        self.conn = connect(mysql, env.database)
        self.source = self.conn if read_from is None else connect(read_from, env.database)
        self.cache = redis.Redis.from_url(env.settings.cache.url)
        self.clock = clock
        self.rng = random.Random(seed)
        self.patterns = patterns
        self.weights = weights  # None: every pattern alike
        self.stats = ReadStats()

    def lookup(self, key: str) -> tuple[bytes | None, str | None]:
        """The cached value, or None and what store() needs to fill it."""
        return self.cache.get(key), None

    def store(self, key: str, value: bytes, token: str | None) -> None:
        self.cache.set(key, value, ex=self.env.settings.cache.ttl_seconds)

    def read(self, query: Query | None = None) -> None:
        """Read `query` (by default one drawn from the patterns, by their weights)."""
        if query is None:
            query = self.rng.choices(self.patterns, self.weights)[0]
        key = self.env.keys.build(query)
        epoch = self.clock.quiet_epoch()
        raw, token = self.lookup(key)
        if raw is None:
            self.stats.misses += 1
            response = self._query(query, self.source)
            self.store(key, encode(response, compression=True), token)
        else:
            self.stats.hits += 1
            response = decode(raw)
            if epoch is not None:
                now = comparable(self._query(query, self.conn), IGNORED)
                if self.clock.quiet_epoch() == epoch:
                    self.stats.judged += 1
                    self.stats.stale += comparable(response, IGNORED) != now
        self._bump([e["element_id"] for e in response["global_elements"]])

    def _query(self, query: Query, conn: Any) -> dict:
        from datetime import UTC, datetime

        from adapters.mysql.primer_query import fetch_rows

        rows = fetch_rows(conn, self.env.settings, query)
        return decode(encode(build_response(query, rows, datetime.now(UTC)), compression=False))

    def _bump(self, ids: list[str]) -> None:
        if not ids:
            return
        marks = ", ".join(["%s"] * len(ids))
        with self.conn.cursor() as cur:
            cur.execute(
                "UPDATE megamind_chunks SET access_count = access_count + 1, "
                f"last_accessed = NOW() WHERE chunk_id IN ({marks})",
                ids,
            )


def _nothing() -> None:
    pass


def read_through(
    env: WarmEnv,
    mysql: dict[str, Any],
    ids: list[str],
    *,
    read_from: dict[str, Any] | None = None,
    quiet_s: float = QUIET_S,
    before_burst: Callable[[], None] = _nothing,
    after_burst: Callable[[], None] = _nothing,
    server: type[PrimerServer] = PrimerServer,
    patterns: tuple[Query, ...] = READ_PATTERNS,
    weights: tuple[float, ...] | None = None,
    readers: int = READERS,
    interval_s: float = READ_INTERVAL_S,
    primed: bool = False,
) -> ReadStats:
    """Readers through the cache during bursts of changes. `after_burst` runs after a
    burst's last write and before the quiet time in which reads are judged (a replica
    held behind catches up there). `primed`: every pattern is read once before the reads
    that count, so the figures are the steady state's, without each key's first miss."""
    clock = Clock()
    stop = threading.Event()
    servers = [
        server(env, mysql, clock, seed, read_from, patterns, weights) for seed in range(readers)
    ]
    if primed:
        for query in patterns:
            servers[0].read(query)
        servers[0].stats = ReadStats()

    def loop(reader: PrimerServer) -> None:
        while not stop.is_set():
            reader.read()
            stop.wait(interval_s)

    threads = [threading.Thread(target=loop, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    writer = connect(mysql, env.database)
    rng = random.Random(5)
    try:
        stop.wait(QUIET_S)
        for burst in range(BURSTS):
            with clock.lock:
                clock.writing, clock.epoch = True, clock.epoch + 1
            before_burst()
            with writer.cursor() as cur:
                for n in range(BURST_WRITES):
                    column, value = rng.choice(
                        (
                            ("content", f"burst {burst}.{n} {rng.random():.6f}"),
                            ("content", f"burst {burst}.{n} {rng.random():.6f}"),
                            ("priority_score", f"{rng.randint(0, 100) / 100:.2f}"),
                            ("enforcement_level", rng.choice(("required", "optional"))),
                        )
                    )
                    cur.execute(
                        f"UPDATE megamind_chunks SET {column} = %s WHERE chunk_id = %s",
                        (value, rng.choice(ids)),
                    )
                    stop.wait(0.005)
            after_burst()
            with clock.lock:
                clock.writing, clock.last_write = False, time.monotonic()
            stop.wait(quiet_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        writer.close()
    total = ReadStats()
    for reader in servers:
        total.add(reader.stats)
        reader.conn.close()
        if reader.source is not reader.conn:
            reader.source.close()
    return total


# ---- 2. commit -> fresh warm value ------------------------------------------------------------


def commit_to_warm(env: WarmEnv, mysql: dict[str, Any], samples: int = 60) -> list[float]:
    query = SEED_WARM_PATTERNS[0]
    key = env.keys.build(query)
    conn = connect(mysql, env.database)
    latencies = []
    try:
        # sample -1 is the warm-up: it waits out whatever backlog the reads left behind
        for n in range(-1, samples):
            raw = wait_for(lambda: env.cache.get(key), timeout=20, interval=0.001, what=key)
            top = decode(raw)["global_elements"][0]["element_id"]
            marker = f"latency {n} {random.random():.9f}"
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE megamind_chunks SET content = %s WHERE chunk_id = %s", (marker, top)
                )
            started = time.perf_counter()

            def fresh_value(marker: str = marker) -> bool:
                raw = env.cache.get(key)
                return raw is not None and any(
                    e["content"] == marker for e in decode(raw)["global_elements"]
                )

            timeout = 120 if n < 0 else 20
            wait_for(fresh_value, timeout=timeout, interval=0.0005, what="the fresh warm value")
            if n >= 0:
                latencies.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return latencies


# ---- 3. warming cost with 10,000 chunks -------------------------------------------------------


def warm_costs(env: WarmEnv) -> list[tuple[str, int, float]]:
    from tasks.work.warming import warm_query

    def median_ms(query: Query) -> tuple[int, float]:
        runs = [warm_query(env.rt, query) for _ in range(7)]
        assert all(r.status == "warmed" for r in runs), runs
        return runs[0].rows or 0, statistics.median(r.ms for r in runs)

    out = []
    started = time.perf_counter()
    for query in SEED_WARM_PATTERNS:
        rows, ms = median_ms(query)
        out.append((env.keys.build(query).removeprefix(env.key_prefix), rows, ms))
    out.append(
        ("every seed pattern, one after another", 0, (time.perf_counter() - started) * 1000 / 7)
    )
    for label, query in (
        ("50 elements, basic filtering", Query(("security",), limit=50)),
        ("500 elements, full metadata", Query(limit=500)),
    ):
        rows, ms = median_ms(query)
        out.append((label, rows, ms))
    return out


# ---- the run ----------------------------------------------------------------------------------


@contextmanager
def environment(
    base: dict[str, str], mysql: dict[str, Any], workdir: Path, **kw: Any
) -> Iterator[WarmEnv]:
    cache = redis.Redis.from_url(base["PRIMER_REDIS_URL"])
    with warm_env(base, mysql, cache, workdir, **kw) as env:
        yield env


def seed_keys_present(env: WarmEnv) -> bool:
    return all(env.cache.exists(env.keys.build(q)) for q in SEED_WARM_PATTERNS)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    base = service_env()
    mysql = mysql_settings(base).connect_kwargs()
    results: dict[str, Any] = {}
    with TemporaryDirectory(prefix="bench-warming-") as tmp:
        workdir = Path(tmp)
        for mode in ("without", "with"):
            with environment(base, mysql, workdir, second_pass_ms=250) as env:
                ids = seed_elements(env.conn, 2000, random.Random(3))
                if mode == "with":
                    env.start_worker()
                    env.start_listener()
                    wait_for(lambda: seed_keys_present(env), timeout=30, what="cold-start warm")
                results[mode] = read_through(env, mysql, ids)
                print(f"read-through {mode} the sidecar: {results[mode]}", flush=True)
                if mode == "with":
                    results["latency"] = commit_to_warm(env, mysql)
        with environment(base, mysql, workdir) as env:
            seed_elements(env.conn, 10_000, random.Random(4))
            results["costs"] = warm_costs(env)
    report(results)


def report(results: dict[str, Any]) -> None:
    print(
        "\n1. simulated primer server reading through the cache "
        f"({READERS} readers, {BURSTS} bursts of {BURST_WRITES} changes)"
    )
    print(f"   {'':<16}{'reads':>8}{'hit rate':>10}{'judged':>8}{'stale':>7}{'stale %':>9}")
    for mode in ("without", "with"):
        s: ReadStats = results[mode]
        print(
            f"   {mode + ' sidecar':<16}{s.hits + s.misses:>8}{s.hit_rate:>10.1%}"
            f"{s.judged:>8}{s.stale:>7}{s.stale / max(s.judged, 1):>9.1%}"
        )
    lat = results["latency"]
    print(
        f"\n2. commit -> fresh warm value ({len(lat)} commits): "
        f"p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms, max {max(lat):.1f} ms"
    )
    print("\n3. warming with 10,000 chunks (median of 7 in-process warms)")
    print(f"   {'pattern':<58}{'rows':>6}{'ms':>9}{'of target':>11}")
    for label, rows, ms in results["costs"]:
        target = {"50 elements, basic filtering": 1000, "500 elements, full metadata": 5000}
        ratio = f"{ms / target[label]:.4f}" if label in target else ""
        print(f"   {label:<58}{rows or '':>6}{ms:>9.1f}{ratio:>11}")


if __name__ == "__main__":
    main()
