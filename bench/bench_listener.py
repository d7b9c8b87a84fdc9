"""The listener against a bare BinLogStreamReader over the same binlog range, in one run.

    make bench BENCH_ARGS=...   or   python -m bench.bench_listener [--only noise|stall|json]

1. read-bump noise: the primer server's access-count bumps (50 rows a statement, 384-dim
   embeddings), committed while the listener is down; then the listener's rate discarding
   them (start-up not counted) against a bare reader's, with binlog_row_image FULL and NOBLOB;
2. stall and burst: the listener SIGSTOPped (a stall, not a restart: it keeps the lead)
   while 15,000 single-row commits pile up, then SIGCONTed; the whole pipeline's time until
   the last commit's key is gone against a bare reader over the same range;
3. binary JSON: the library's parse of a FULL-image read bump carrying two MySQL 8 binary
   JSON embeddings (384 and 1,536 dimensions) against the fast decoder on the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import time
import timeit
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import redis
from pymysqlreplication.row_event import UpdateRowsEvent

from bench.bench_pipeline import bare_reader_seconds, sidecar_running
from config.mysql import MySQLSettings
from config.query import Query
from tests.binlog_rows import bitmap, encode_image, synthetic_event
from tests.services import mysql_settings, service_env, wait_for
from tests.sidecar import Sidecar
from tests.test_rowdecode import CHUNKS, PRODUCTION_KEYS
from worker.rowdecode import RowDecoder

BUMP_ROWS = 50


def embedding(rng: random.Random, dims: int = 384) -> list[float]:
    return [round(rng.uniform(-1, 1), 6) for _ in range(dims)]


def seed_chunks(car: Sidecar, n: int) -> list[str]:
    rng = random.Random(3)
    ids = [f"noise{i}" for i in range(n)]
    with car.conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO megamind_chunks (chunk_id, content, element_category, priority_score, "
            "enforcement_level, embedding, applies_to, tags) "
            "VALUES (%s, %s, 'noise', 0.5, 'optional', %s, '[\"python\"]', '[\"t\"]')",
            [(i, f"content of {i} " * 20, json.dumps(embedding(rng))) for i in ids],
        )
    car.insert_chunk("lat", "latency", "0.90", "required")
    return ids


def settings_of(car: Sidecar) -> MySQLSettings:
    return mysql_settings(car.env)


def last_change(car: Sidecar, label: str) -> str:
    """Commit a visible change behind the backlog; its key going means the backlog is done."""
    (key,) = car.plant(Query(("latency",)))
    car.execute("UPDATE megamind_chunks SET content = %s WHERE chunk_id = 'lat'", (label,))
    return key


def bench_noise(car: Sidecar, ids: list[str], rows: int) -> None:
    print(f"\n## 1. read-bump noise: {rows:,} rows, {BUMP_ROWS} a statement, 384-dim embeddings")
    settings = settings_of(car)
    for image in ("FULL", "NOBLOB"):
        car.sync()
        assert car.listener is not None
        car.listener.stop()
        start = car.gtid_now()
        t0 = time.perf_counter()
        with car.conn.cursor() as cur:
            cur.execute(f"SET SESSION binlog_row_image = {image}")
            for i in range(0, rows, BUMP_ROWS):
                batch = [ids[(i + j) % len(ids)] for j in range(BUMP_ROWS)]
                cur.execute(
                    "UPDATE megamind_chunks SET access_count = access_count + 1, "
                    "last_accessed = NOW() WHERE chunk_id IN %s",
                    (batch,),
                )
            write_s = time.perf_counter() - t0
            key = last_change(car, f"noise-{image}")
            cur.execute("SET SESSION binlog_row_image = FULL")
        end = car.gtid_now()
        base_s, seen = bare_reader_seconds(settings, start, end, car.database)
        pipe_s = resume(car, key)
        base2_s, _ = bare_reader_seconds(settings, start, end, car.database)
        base = min(base_s, base2_s)
        print(
            f"{image:6}  writer {seen / write_s:8,.0f} rows/s   bare reader {seen / base:8,.0f} "
            f"rows/s (runs {base_s:.2f} s, {base2_s:.2f} s)   listener {seen / pipe_s:8,.0f} "
            f"rows/s ({pipe_s:.2f} s)   listener/bare {base / pipe_s:.2f}x"
        )


def resume(car: Sidecar, key: str) -> float:
    """Start a listener; the seconds from its stream's start until `key` is gone. The stopped
    one released its lock: this one leads at once (its start-up is not counted)."""
    listener = car.spawn_listener()
    wait_for(lambda: "streaming from" in listener.output(), timeout=60, interval=0.002)
    t_stream = time.perf_counter()
    wait_for(lambda: not car.redis.exists(key), timeout=600, interval=0.01)
    car.listener = listener
    return time.perf_counter() - t_stream


def bench_stall(car: Sidecar, ids: list[str], commits: int) -> None:
    car.sync()
    assert car.listener is not None
    settings = settings_of(car)
    start = car.gtid_now()
    car.listener.proc.send_signal(signal.SIGSTOP)
    try:
        with car.conn.cursor() as cur:
            for i in range(commits - 1):
                cur.execute(
                    "UPDATE megamind_chunks SET content = %s WHERE chunk_id = %s",
                    (f"burst{i}", ids[i % len(ids)]),
                )
        key = last_change(car, "burst-end")
        end = car.gtid_now()
        base_s, rows = bare_reader_seconds(settings, start, end, car.database)
    finally:
        t0 = time.perf_counter()
        car.listener.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: not car.redis.exists(key), timeout=600, interval=0.01)
    pipe_s = time.perf_counter() - t0
    base2_s, _ = bare_reader_seconds(settings, start, end, car.database)
    base = min(base_s, base2_s)
    restarted = car.listener.output().count("streaming from")
    print(f"\n## 2. stall and burst: {commits:,} single-row commits ({rows:,} row events)")
    print(
        f"bare reader {base:.2f} s (runs {base_s:.2f} s, {base2_s:.2f} s)   whole pipeline "
        f"{pipe_s:.2f} s   pipeline/bare {base / pipe_s:.2f}x   (target >= 0.9x; "
        f"listener streams started: {restarted}, 1 = no restart)"
    )


def bench_json(repeat: int) -> None:
    print("\n## 3. binary JSON: a FULL-image read bump with two MySQL 8 binary JSON embeddings")
    rng = random.Random(4)
    decoder = RowDecoder(
        {"megamind_chunks": PRODUCTION_KEYS}, {"access_count", "last_accessed", "updated_at"}
    )
    full = [True] * len(CHUNKS)
    for dims in (384, 1536):
        row: dict[str, Any] = {c.name: None for c in CHUNKS}
        row.update(
            chunk_id="c1",
            realm_id="GLOBAL",
            content="content " * 50,
            element_category="security",
            embedding=embedding(rng, dims),
            access_count=1,
        )
        data = encode_image(CHUNKS, full, row) + encode_image(
            CHUNKS, full, {**row, "access_count": 2}
        )
        lib_s, fast_s = time_decoding(decoder, data, repeat)
        print(
            f"{dims:5}-dim: library {lib_s * 1000:7.3f} ms/row   fast decoder "
            f"{fast_s * 1000:7.3f} ms/row   {lib_s / fast_s:6.1f}x   "
            f"(row bytes {len(data):,}; the library caps the listener at {1 / lib_s:,.0f} rows/s)"
        )


def time_decoding(decoder: RowDecoder, data: bytes, repeat: int) -> tuple[float, float]:
    """Seconds per row: the library's decoding of the update event, and the fast decoder's."""
    full = bitmap([True] * len(CHUNKS))
    plan = decoder.plan("megamind_chunks", CHUNKS)
    assert plan is not None

    def event() -> Any:
        return synthetic_event(UpdateRowsEvent, "megamind_chunks", CHUNKS, data, full, full)

    def library() -> None:
        event().rows  # noqa: B018 (the property decodes)

    def fast() -> None:
        decoder.decode_rows(plan, event(), data)

    lib_s = min(timeit.repeat(library, number=repeat, repeat=3)) / repeat
    fast_s = min(timeit.repeat(fast, number=repeat, repeat=3)) / repeat
    return lib_s, fast_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="read-bump rows per image")
    parser.add_argument("--commits", type=int, default=15_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--only", choices=["noise", "stall", "json"], action="append")
    args = parser.parse_args()
    parts = set(args.only or ["noise", "stall", "json"])
    if "json" in parts:
        bench_json(args.repeat)
    if not parts & {"noise", "stall"}:
        return
    env = service_env()
    settings = mysql_settings(env)
    client = redis.Redis.from_url(env["PRIMER_REDIS_URL"])
    # A lock TTL longer than the stall: SIGSTOP must be a stall, not a lost lead.
    with (
        TemporaryDirectory() as tmp,
        sidecar_running(
            env, settings.connect_kwargs(), client, Path(tmp), leader_ttl_ms=600_000
        ) as car,
    ):
        ids = seed_chunks(car, 1000)
        if "noise" in parts:
            bench_noise(car, ids, args.rows)
        if "stall" in parts:
            bench_stall(car, ids, args.commits)


if __name__ == "__main__":
    main()
