"""One node against the 3-primary Redis Cluster, in one run, with 1M primer keys each:

    set -a; . .run/services.env; set +a
    flock /tmp/primer-bench.lock python -m bench.bench_cluster [--keys N] [--samples N]

1. one sweep (SCAN + parse + predicate, nothing deleted) over every key;
2. commit -> key gone, p50/p99, with those keys present (each commit's batch sweeps them all);
3. one flush (every key deleted), which also removes the keys again.

The single node is the baseline: the cluster's figures are printed as ratios against it. The
keys are loaded with pipelines under a throwaway prefix; everything is removed after.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from adapters.redis.connection import connect_redis
from bench.bench_pipeline import measure_latency, pct, populate, sidecar_running
from core.predicate import ChangeIndex, ElementImage
from tasks.work.sweep import sweep
from tests.services import mysql_settings, service_env


def run_target(
    name: str, env: dict[str, str], mysql: dict[str, Any], n: int, samples: int, tmp: Path
) -> dict[str, float]:
    client = connect_redis(env["PRIMER_REDIS_URL"])
    with sidecar_running(env, mysql, client, tmp) as car:
        car.insert_chunk("lat", "latency", "0.90", "required")
        car.sync()
        t0 = time.perf_counter()
        populate(car.redis, car.keys, n)
        load_s = time.perf_counter() - t0
        index = ChangeIndex(
            [ElementImage("cat00", None, "optional"), ElementImage("zz", None, None)]
        )
        t0 = time.perf_counter()
        result = sweep(car.redis, car.keys, index.affects, dry_run=True)
        sweep_s = time.perf_counter() - t0
        latency = measure_latency(car, samples)
        t0 = time.perf_counter()
        flushed = sweep(car.redis, car.keys, lambda _: True)
        flush_s = time.perf_counter() - t0
    print(
        f"{name:8} load {load_s:6.2f} s | sweep of {result.scanned:,} keys {sweep_s:5.2f} s | "
        f"commit->gone p50 {pct(latency, 0.5):7.1f} ms p99 {pct(latency, 0.99):7.1f} ms "
        f"(n={samples}) | flush of {flushed.deleted:,} keys {flush_s:5.2f} s",
        flush=True,
    )
    return {
        "sweep": sweep_s,
        "p50": pct(latency, 0.5),
        "p99": pct(latency, 0.99),
        "flush": flush_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    env = service_env()
    mysql = mysql_settings(env).connect_kwargs()
    print(f"## single Redis node against the 3-primary cluster, {args.keys:,} keys each")
    with TemporaryDirectory() as tmp:
        single = run_target("single", env, mysql, args.keys, args.samples, Path(tmp))
        cluster_env = {**env, "PRIMER_REDIS_URL": env["PRIMER_REDIS_CLUSTER_URL"]}
        cluster = run_target("cluster", cluster_env, mysql, args.keys, args.samples, Path(tmp))
    print(
        "cluster/single: "
        + ", ".join(f"{k} {cluster[k] / single[k]:.2f}x" for k in ("sweep", "p50", "p99", "flush"))
    )


if __name__ == "__main__":
    main()
