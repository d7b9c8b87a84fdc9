"""The invalidation pipeline's speed, as ratios against baselines run in the same script.

    make bench        (or: set -a; . .run/services.env; set +a; python -m bench.bench_pipeline)

1. commit -> key gone latency, p50/p99, idle and under 500 commits/s;
2. backlog catch-up: 15,000 single-row updates committed while the listener is down, then the
   whole pipeline's rate against a bare BinLogStreamReader reading the same GTID range;
3. one sweep over a 1M-key keyspace against `redis-cli --scan` and a bare SCAN loop (with
   the head pattern, and with the sweep's own `*<head>*`) over the same keys, and the
   events each sweep covers at 1,000 commits/s with those 1M keys present.

Everything runs in a throwaway schema, key prefix and queues; all of it is removed after.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import redis
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import MariadbGtidEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from config.mysql import MySQLSettings
from config.query import Query
from core.predicate import ChangeIndex, ElementImage
from tasks.work.sweep import sweep
from tests.services import connect, mysql_settings, service_env, wait_for
from tests.sidecar import Sidecar, isolated
from worker.fast_lane import RESCAN_COST, RESCAN_MIN_S, SCAN_COUNT

CATEGORIES = [f"cat{i:02d}" for i in range(20)]
LOADS = [f"load{i}" for i in range(100)]
PAUSE = 0.05  # between latency samples: each commit on its own, as an idle server sees it
POLL_S = 0.0005


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def sidecar_running(
    env: dict[str, str], mysql: dict[str, Any], client: redis.Redis, workdir: Path, **options: Any
) -> Iterator[Sidecar]:
    """A sidecar as the Procfile runs it (worker concurrency 2), in a scratch schema."""
    with isolated(Sidecar, env, mysql, client, workdir, **options) as car:
        car.start_worker(concurrency=2)
        car.start_listener()
        car.sync()
        yield car


class Writer(threading.Thread):
    """Commits single-row updates to `chunk_ids` at `rate` per second until stopped."""

    def __init__(
        self, mysql: dict[str, Any], database: str, chunk_ids: list[str], rate: float
    ) -> None:
        super().__init__(daemon=True)
        self.conn = connect(mysql, database)
        self.ids, self.rate = chunk_ids, rate
        self.stop_event = threading.Event()
        self.commits = 0

    def run(self) -> None:
        start = time.perf_counter()
        with self.conn.cursor() as cur:
            while not self.stop_event.is_set():
                cur.execute(
                    "UPDATE megamind_chunks SET content = %s WHERE chunk_id = %s",
                    (f"v{self.commits}", self.ids[self.commits % len(self.ids)]),
                )
                self.commits += 1
                ahead = self.commits / self.rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
        self.conn.close()


def known_to_fast_lane(car: Sidecar, key: str) -> None:
    """Keep `key` cached through two of the fast lane's rescans, so its snapshot knows the
    name, as it knows any name the primer server keeps cached. Sampling at once measured the
    sweep instead for the first seconds: between samples the key exists only from its SET to
    its deletion, so the scans found it late (issue 21: most of the idle p99)."""
    car.redis.set(key, b"cached")
    t0 = time.perf_counter()
    for _ in car.redis.scan_iter(match=car.keys.scan_pattern(), count=SCAN_COUNT):
        pass
    scan_s = time.perf_counter() - t0
    time.sleep(2 * (max(RESCAN_MIN_S, RESCAN_COST * scan_s) + scan_s))


def measure_latency(car: Sidecar, samples: int, pause: float = PAUSE) -> list[float]:
    """Commit a change, then poll until its key is gone; `pause` seconds between samples
    (0: back to back, each commit while the previous one's sweep may still run)."""
    (key,) = car.plant(Query(("latency",)))
    known_to_fast_lane(car, key)
    out = []
    for i in range(samples):
        car.redis.set(key, b"cached")
        car.execute("UPDATE megamind_chunks SET content = %s WHERE chunk_id = 'lat'", (f"x{i}",))
        t0 = time.perf_counter()
        # Poll every POLL_S, not in a busy loop: on two cores a busy loop (and the Redis
        # it keeps busy) takes the CPU the pipeline is measured on.
        while car.redis.exists(key):
            time.sleep(POLL_S)
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(pause)
    return out


def prepare(car: Sidecar) -> None:
    """The chunks and 10,000 unrelated keys the latency and catch-up parts work on."""
    car.insert_chunk("lat", "latency", "0.90", "required")
    for chunk_id in LOADS:
        car.insert_chunk(chunk_id, "load", "0.50", "optional")
    rng = random.Random(1)
    car.plant(
        *{
            Query((rng.choice(CATEGORIES),), rng.choice([0.0, 0.5, 0.8]), limit=rng.randint(1, 999))
            for _ in range(10_000)
        }
    )
    car.sync()


def bench_latency(car: Sidecar, mysql: dict[str, Any], samples: int) -> None:
    idle = measure_latency(car, samples)
    back_to_back = measure_latency(car, samples, pause=0)
    writer = Writer(mysql, car.database, LOADS, rate=500)
    writer.start()
    try:
        time.sleep(1)
        loaded = measure_latency(car, samples)
    finally:
        writer.stop()
    print("\n## 1. commit -> key gone (10,000 other keys present, worker concurrency 2)")
    print(f"(polled every {POLL_S * 1000:.1f} ms; {PAUSE * 1000:.0f} ms between samples)")
    rows = (("idle", idle), ("back to back", back_to_back), ("500 commits/s", loaded))
    for name, got in rows:
        p50, p99 = pct(got, 0.5), pct(got, 0.99)
        print(f"{name:15}  p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   (n={samples})")


def bare_reader_seconds(
    settings: MySQLSettings, start: str, end: str, database: str
) -> tuple[float, int]:
    """A bare BinLogStreamReader over the same range: the rate our pipeline is held to."""
    t0 = time.perf_counter()
    stream = BinLogStreamReader(
        connection_settings=settings.connect_kwargs(),
        server_id=random.randint(10_000, 2**31),
        blocking=True,
        resume_stream=True,
        is_mariadb=True,
        auto_position=start,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, MariadbGtidEvent],
        only_schemas=[database],
        only_tables=["megamind_chunks", "megamind_global_elements"],
        slave_heartbeat=5,
    )
    rows, current = 0, ""
    try:
        for event in stream:
            if isinstance(event, MariadbGtidEvent):
                current = event.gtid
            elif isinstance(event, XidEvent):
                if current == end:
                    break
            else:
                rows += len(event.rows)  # decodes the rows, as the listener must
    finally:
        stream.close()
    return time.perf_counter() - t0, rows


def sweeps_done(car: Sidecar) -> int:
    return int(car.redis.hget(f"{car.state_prefix}stats", "sweeps") or 0)


def bench_catch_up(car: Sidecar, commits: int) -> None:
    loads = LOADS
    car.sync()
    assert car.listener is not None
    car.listener.stop()
    start = car.gtid_now()
    with car.conn.cursor() as cur:
        for i in range(commits - 1):
            cur.execute(
                "UPDATE megamind_chunks SET content = %s WHERE chunk_id = %s",
                (f"backlog{i}", loads[i % len(loads)]),
            )
    (key,) = car.plant(Query(("latency",)))
    car.execute("UPDATE megamind_chunks SET content = 'last' WHERE chunk_id = 'lat'")
    end = car.gtid_now()
    settings = mysql_settings(car.env)
    base_s, rows = bare_reader_seconds(settings, start, end, car.database)
    sweeps_before = sweeps_done(car)
    # The stopped leader released its lock: this one leads at once (start-up not counted).
    listener = car.spawn_listener()
    t0 = time.perf_counter()
    wait_for(lambda: "streaming from" in listener.output(), timeout=60, interval=0.002)
    t_stream = time.perf_counter()
    # Poll gently: the bench must not take the CPU the pipeline is measured on (two cores).
    wait_for(lambda: not car.redis.exists(key), timeout=300, interval=0.01)
    pipe_s = time.perf_counter() - t_stream
    car.listener = listener
    base2_s, _ = bare_reader_seconds(settings, start, end, car.database)
    sweeps = sweeps_done(car) - sweeps_before
    base = min(base_s, base2_s)
    print(f"\n## 2. backlog catch-up: {commits} single-row commits ({rows} row events)")
    print(
        f"bare BinLogStreamReader: {base_s:6.2f} s, again after {base2_s:.2f} s "
        f"({rows / base:.0f} ev/s at best)"
    )
    print(
        f"whole pipeline:          {pipe_s:6.2f} s ({commits / pipe_s:.0f} ev/s; "
        f"listener start-up {t_stream - t0:.2f} s not counted; {sweeps} sweeps)"
    )
    print(f"ratio pipeline/bare:     {base / pipe_s:.2f}x   (target >= 0.9x)")


def populate(client: redis.Redis, prefix_keys: Any, n: int) -> None:
    rng = random.Random(2)
    seen: set[Query] = set()
    pipe = client.pipeline(transaction=False)
    while len(seen) < n:
        cats = tuple(rng.sample(CATEGORIES, rng.choice([1, 1, 2])))
        query = Query(
            cats,
            rng.choice([0.3, 0.5, 0.8, 0.95]),
            rng.choice(["all", "required", "recommended", "optional"]),
            limit=rng.randint(1, 400),
        )
        if query in seen:
            continue
        seen.add(query)
        pipe.set(prefix_keys.build(query), b"x")
        if len(pipe) >= 10_000:
            pipe.execute()
    pipe.execute()


def bench_sweep(car: Sidecar, mysql: dict[str, Any], n: int, seconds: float) -> None:
    populate(car.redis, car.keys, n)
    port = car.redis.connection_pool.connection_kwargs["port"]
    t0 = time.perf_counter()
    subprocess.run(
        ["redis-cli", "-p", str(port), "--scan", "--pattern", car.keys.scan_pattern()],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    cli_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scanned = sum(1 for _ in car.redis.scan_iter(match=car.keys.scan_pattern(), count=1000))
    bare_s = time.perf_counter() - t0
    # The sweep's own pattern, *<head>*, also finds the lease keys (one SCAN for both kinds).
    t0 = time.perf_counter()
    sum(1 for _ in car.redis.scan_iter(match=car.keys.sweep_pattern(), count=1000))
    both_s = time.perf_counter() - t0
    # Images that affect no key in this keyspace: the sweep's cost without its deletions.
    index = ChangeIndex([ElementImage("cat00", None, "optional"), ElementImage("zz", None, None)])
    t0 = time.perf_counter()
    result = sweep(car.redis, car.keys, index.affects, dry_run=True)
    sweep_s = time.perf_counter() - t0
    assert result.scanned == scanned
    print(f"\n## 3. one sweep over {result.scanned:,} keys")
    print(f"redis-cli --scan (its default COUNT): {cli_s:6.2f} s")
    print(f"bare SCAN COUNT 1000 loop (redis-py): {bare_s:6.2f} s   MATCH <head>*")
    print(
        f"the same, MATCH *<head>*:             {both_s:6.2f} s   "
        f"= {both_s / bare_s:.2f}x (cache and lease keys in one SCAN)"
    )
    print(
        f"sweep: SCAN + parse + predicate:      {sweep_s:6.2f} s   "
        f"= {sweep_s / cli_s:.2f}x redis-cli, {sweep_s / bare_s:.2f}x bare SCAN, "
        f"{sweep_s / both_s:.2f}x bare SCAN *<head>*"
    )

    loads = [f"zzload{i}" for i in range(100)]
    for chunk_id in loads:
        car.insert_chunk(chunk_id, "zzload", "0.10", "optional")
    car.sync(timeout=120)
    stats_key = f"{car.state_prefix}stats"
    before = int(car.redis.hget(stats_key, "sweeps") or 0)
    writer = Writer(mysql, car.database, loads, rate=1000)
    writer.start()
    time.sleep(seconds)
    writer.stop()
    t0 = time.perf_counter()
    car.sync(timeout=300)
    lag = time.perf_counter() - t0
    sweeps = int(car.redis.hget(stats_key, "sweeps") or 0) - before
    print(
        f"at {writer.commits / seconds:.0f} commits/s for {seconds:.0f} s "
        f"with {result.scanned:,} keys: {sweeps} sweeps, "
        f"{writer.commits / max(sweeps, 1):.0f} commits per sweep; "
        f"lag when the writes stopped: {lag:.2f} s"
    )
    print(
        f"(one sweep per commit would need {writer.commits * sweep_s:.0f} s of sweeping for "
        f"{seconds:.0f} s of writes: the lag would grow without bound)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--commits", type=int, default=15_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--only",
        choices=["latency", "catch-up", "sweep"],
        action="append",
        help="run only these parts (repeatable)",
    )
    args = parser.parse_args()
    parts = set(args.only or ["latency", "catch-up", "sweep"])
    env = service_env()
    mysql = mysql_settings(env).connect_kwargs()
    client = redis.Redis.from_url(env["PRIMER_REDIS_URL"])
    with TemporaryDirectory() as tmp:
        if parts & {"latency", "catch-up"}:
            with sidecar_running(env, mysql, client, Path(tmp)) as car:
                prepare(car)
                if "latency" in parts:
                    bench_latency(car, mysql, args.samples)
                if "catch-up" in parts:
                    bench_catch_up(car, args.commits)
        if "sweep" in parts:
            with sidecar_running(env, mysql, client, Path(tmp)) as car:
                bench_sweep(car, mysql, args.keys, args.seconds)


if __name__ == "__main__":
    main()
