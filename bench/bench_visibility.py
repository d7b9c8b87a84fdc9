"""How often a transaction reaches a binlog client before readers on the primary see it (the
group-commit gap of issue 22, seam 5; docs/seams.md).

    set -a; . .run/services.env; set +a
    .venv/bin/python -m bench.bench_visibility [--writers 4] [--seconds 20]

Writers update rows in autocommit (a few ms apart, so that the reader keeps up); a
BinLogStreamReader reads each update and at once reads the row back with a plain SELECT on
the primary. Counts the updates read before the primary showed them, and how long until it
did. Works in a throwaway schema on the server PRIMER_MYSQL_URL names; drops it afterwards.
The server's sync_binlog and innodb_flush_log_at_trx_commit decide part of the gap: the
figures name them.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import UpdateRowsEvent

from tests.services import connect, mysql_settings, service_env, unique

ROWS = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    settings = mysql_settings(service_env())
    params = settings.connect_kwargs()
    admin = connect(params)
    database = unique("vis_")
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{database}`")
            cur.execute(f"CREATE TABLE `{database}`.vis (id INT PRIMARY KEY, v INT NOT NULL)")
            values = ",".join(f"({i}, 0)" for i in range(ROWS))
            cur.execute(f"INSERT INTO `{database}`.vis VALUES {values}")
            cur.execute("SELECT @@gtid_binlog_pos, @@sync_binlog, @@innodb_flush_log_at_trx_commit")
            position, sync_binlog, flush_at_commit = cur.fetchone()
        seen, late, gaps = measure(params, database, position, args.writers, args.seconds)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()
    gap = ""
    if gaps:
        gaps.sort()
        gap = f"; until visible: median {gaps[len(gaps) // 2]:.3f} ms, max {gaps[-1]:.3f} ms"
    print(
        f"sync_binlog={sync_binlog} innodb_flush_log_at_trx_commit={flush_at_commit} "
        f"writers={args.writers}: {seen:,} updates read, {late:,} "
        f"({100 * late / max(seen, 1):.2f}%) before the primary showed them{gap}"
    )


def measure(
    params: dict[str, Any], database: str, position: str, writers: int, seconds: float
) -> tuple[int, int, list[float]]:
    stop = threading.Event()

    def write(n: int) -> None:
        conn = connect(params, database)
        mine = [i for i in range(ROWS) if i % writers == n]
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("UPDATE vis SET v = v + 1 WHERE id = %s", (random.choice(mine),))
                time.sleep(random.random() * 0.004)
        conn.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    check = connect(params, database)
    stream = BinLogStreamReader(
        connection_settings=params,
        server_id=random.randint(10_000, 2**31),
        blocking=True,
        is_mariadb=True,
        auto_position=position,
        only_events=[UpdateRowsEvent],
        only_schemas=[database],
        only_tables=["vis"],
        freeze_schema=True,
    )
    seen, late, gaps = 0, 0, []
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    try:
        for event in stream:
            for row in event.rows:
                ident, value = row["after_values"]["id"], row["after_values"]["v"]
                seen += 1
                if _read(check, ident) >= value:
                    continue
                late += 1
                started = time.perf_counter()
                while _read(check, ident) < value:
                    pass
                gaps.append((time.perf_counter() - started) * 1000)
            if time.monotonic() > deadline:
                break
    finally:
        stop.set()
        stream.close()
        for thread in threads:
            thread.join()
        check.close()
    return seen, late, gaps


def _read(conn: pymysql.Connection, ident: int) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT v FROM vis WHERE id = %s", (ident,))
        (value,) = cur.fetchone()
    return int(value)


if __name__ == "__main__":
    main()
