"""Read replicas, measured: a primer server that fills its misses from a replica held 1.5 s
behind during bursts of changes.

    set -a; . .run/services.env; set +a; python -m bench.bench_replicas

The simulated primer server of bench_warming (4 readers through the cache) fills misses from
the GTID replica that scripts/services.sh starts. During each burst of changes the replica's
SQL thread is stopped; it starts again 1.5 s after the burst's last write. Reads are judged
(a hit whose content differs from the primary) from 1 s after the replica caught up. Same
data, same schedule, the sidecar (listener + worker, second pass 250 ms) running in both:
once without the replica setting, once with PRIMER_REPLICA_URLS naming the replica.

Then what the wait costs while the replica keeps up: commit -> key gone (bench_pipeline's
measurement, idle) with the replica not held, without and with the replica setting.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pymysql

from bench.bench_pipeline import measure_latency, pct, sidecar_running
from bench.bench_warming import (
    BURST_WRITES,
    BURSTS,
    READERS,
    ReadStats,
    environment,
    read_through,
    seed_keys_present,
)
from tests.services import connect, mysql_settings, service_env, wait_for
from tests.warm_fixtures import WarmEnv, seed_elements

LAG_S = 1.5
QUIET_S = 4.0  # after the replica caught up; reads are judged from 1 s on


class HeldReplica:
    """Holds the replica behind during a burst and lets it apply the burst LAG_S later."""

    def __init__(self, replica: dict[str, Any], primary: dict[str, Any]) -> None:
        self.replica = connect(replica)
        self.primary = connect(primary)

    def _run(self, sql: str) -> None:
        with self.replica.cursor() as cur:
            cur.execute(sql)

    def before_burst(self) -> None:
        self._run("STOP SLAVE SQL_THREAD")

    def after_burst(self) -> None:
        time.sleep(LAG_S)
        self._run("START SLAVE SQL_THREAD")
        self.caught_up()

    def caught_up(self) -> None:
        with self.primary.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
            position = cur.fetchone()[0]
        with self.replica.cursor() as cur:
            cur.execute("SELECT MASTER_GTID_WAIT(%s, 60)", (position,))
            assert cur.fetchone()[0] == 0, f"replica did not reach {position}"

    def close(self) -> None:
        with contextlib.suppress(pymysql.Error):
            self._run("START SLAVE SQL_THREAD")  # never leave it held
        self.replica.close()
        self.primary.close()


def replica_toml(replica: dict[str, Any]) -> str:
    return (
        f'[replicas]\nurls = ["mysql://{replica["user"]}:@{replica["host"]}:{replica["port"]}"]\n'
    )


def run_mode(
    base: dict[str, str],
    mysql: dict[str, Any],
    replica: dict[str, Any],
    workdir: Path,
    with_replicas: bool,
) -> tuple[ReadStats, dict[str, int]]:
    toml = replica_toml(replica) if with_replicas else ""
    with environment(base, mysql, workdir, second_pass_ms=250, toml_extra=toml) as env:
        ids = seed_elements(env.conn, 2000, random.Random(3))
        env.start_worker()
        env.start_listener()
        wait_for(lambda: seed_keys_present(env), timeout=30, what="cold-start warm")
        held = HeldReplica(replica, mysql)
        try:
            held.caught_up()  # the replica has the schema and the data
            stats = read_through(
                env,
                mysql,
                ids,
                read_from=replica,
                quiet_s=QUIET_S,
                before_burst=held.before_burst,
                after_burst=held.after_burst,
            )
        finally:
            held.close()
        return stats, _counts(env)


def healthy_latency(
    base: dict[str, str],
    mysql: dict[str, Any],
    replica: dict[str, Any],
    workdir: Path,
    with_replicas: bool,
    samples: int = 200,
) -> list[float]:
    """Commit -> key gone (ms) while the replica keeps up."""
    import redis

    toml = replica_toml(replica) if with_replicas else ""
    client = redis.Redis.from_url(base["PRIMER_REDIS_URL"])
    with sidecar_running(base, mysql, client, workdir, extra_toml=toml) as car:
        car.insert_chunk("lat", "latency", "0.90", "required")
        car.sync()
        return measure_latency(car, samples)


def _counts(env: WarmEnv) -> dict[str, int]:
    raw = env.cache.hgetall(f"{env.state_prefix}stats")
    return {k.decode(): int(v) for k, v in raw.items()}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    base = service_env()
    primary = mysql_settings(base)
    replica = mysql_settings(base, "PRIMER_REPLICA_URL")
    results = {}
    latency = {}
    with TemporaryDirectory(prefix="bench-replicas-") as tmp:
        for with_replicas in (False, True):
            label = "with replicas" if with_replicas else "without"
            results[label] = run_mode(
                base, primary.connect_kwargs(), replica.connect_kwargs(), Path(tmp), with_replicas
            )
            print(f"{label}: {results[label]}", flush=True)
        for with_replicas in (False, True):
            label = "with replicas" if with_replicas else "without"
            latency[label] = healthy_latency(
                base, primary.connect_kwargs(), replica.connect_kwargs(), Path(tmp), with_replicas
            )
    print(
        f"\nsimulated primer server filling misses from a replica {LAG_S} s behind during "
        f"bursts ({READERS} readers, {BURSTS} bursts of {BURST_WRITES} changes, sidecar on)"
    )
    print(
        f"   {'replica setting':<18}{'reads':>8}{'hit rate':>10}{'judged':>8}{'stale':>7}"
        f"{'stale %':>9}{'sweeps':>8}{'follow-ups':>12}"
    )
    for label, (s, counts) in results.items():
        print(
            f"   {label:<18}{s.hits + s.misses:>8}{s.hit_rate:>10.1%}{s.judged:>8}{s.stale:>7}"
            f"{s.stale / max(s.judged, 1):>9.1%}{counts.get('sweeps', 0):>8}"
            f"{counts.get('replica_followups', 0):>12}"
        )

    print("\ncommit -> key gone, replica keeping up (idle, worker concurrency 2)")
    for label, got in latency.items():
        print(
            f"   {label:<18}p50 {pct(got, 0.5):7.2f} ms   p99 {pct(got, 0.99):7.2f} ms"
            f"   (n={len(got)})"
        )


if __name__ == "__main__":
    main()
