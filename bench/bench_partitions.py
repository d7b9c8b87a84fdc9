"""Time one `ensure_partitions` run: with an empty p_future, and with rows in p_future that
REORGANIZE must copy (the cost operators see when the task stopped running for a while).

    set -a; . .run/services.env; set +a
    .venv/bin/python -m bench.bench_partitions [--rows 100000] [--repeat 3]

Works in a throwaway schema on the server PRIMER_MYSQL_URL names; drops it afterwards.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pymysql

from config import load_settings
from tests.services import schema_statements

NOW = datetime(2025, 10, 15, tzinfo=UTC)  # the seed table's partitions end at September 2025
TABLE = "megamind_global_element_analytics_partitioned"
# The reference table, as sql/schema.sql (what `make test` and `make run` load) defines it.
DDL = next(statement for statement in schema_statements() if TABLE in statement)
# Rows spread over October 2025 .. January 2026: all in p_future before the run.
FILL = f"""
INSERT INTO {TABLE} (analytics_id, element_id, access_type, user_session_id,
                     relevance_score, access_timestamp, processing_time_ms)
SELECT CONCAT('a', seq), CONCAT('e', seq % 5000), 'primer_request', CONCAT('s', seq % 977),
       (seq % 100) / 100, '2025-10-01' + INTERVAL (seq * 97) % (123 * 86400) SECOND, seq % 250
FROM seq_1_to_{{rows}}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in p_future")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median shown)")
    args = parser.parse_args()
    # The p_future warning is expected here, once per run: keep the figures readable.
    logging.basicConfig(level=logging.ERROR)

    settings = load_settings()
    from tasks.work.partitions import ensure_partitions

    params = settings.mysql.connect_kwargs()
    schema = f"bench_partitions_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(autocommit=True, **params)
    _run(admin, f"CREATE DATABASE `{schema}`")
    try:
        conn = pymysql.connect(autocommit=True, database=schema, **params)

        def ensure() -> Any:
            return ensure_partitions(params, schema, TABLE, now=NOW, months_ahead=3)

        def fresh(rows: int) -> float:
            _run(conn, f"DROP TABLE IF EXISTS {TABLE}")
            _run(conn, DDL)
            if not rows:
                return 0.0
            return _timed(lambda: _run(conn, FILL.format(rows=rows)))

        print(f"ensure_partitions on {settings.mysql!r}, schema {schema}, {args.repeat} run(s)")
        for rows in (0, args.rows):
            fills, runs, noops = [], [], []
            for _ in range(args.repeat):
                fills.append(fresh(rows))
                runs.append(_timed(ensure))
                noops.append(_timed(ensure))  # the table is already in shape: no DDL
            label = f"p_future with {rows:>7,} rows"
            fill = f"  (insert {statistics.median(fills):.2f} s)" if rows else ""
            print(
                f"  {label}: ensure {statistics.median(runs):.3f} s median"
                f" (min {min(runs):.3f}, max {max(runs):.3f}); second run"
                f" {statistics.median(noops) * 1000:.1f} ms{fill}"
            )
        conn.close()
    finally:
        _run(admin, f"DROP DATABASE IF EXISTS `{schema}`")
        admin.close()


def _run(conn: pymysql.Connection, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)


def _timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
