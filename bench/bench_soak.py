"""Fault soak: commit -> key gone through a schedule of faults, at steady commit rates.

    set -a; . .run/services.env; set +a; python -m bench.bench_soak [--rates 100 500]

Per rate, everything is the benchmark's own and loopback only: a MariaDB primary with a GTID
replica (the sidecar's two sources), a cache Redis under three sentinels (primary, replica),
a Redis broker, two Celery workers, a leading listener and a standby, all with the product's
defaults (listener.leader_ttl_ms 1 s, listener.redeliver_after_s 30 s, cache.second_pass_ms
250, cache.wait_replicas 1). A writer commits single-row changes at the rate, each to a chunk
of its own whose category only one planted key (the change's sentinel key) shows; a checker
polls the keys of the changes in flight and records commit -> gone. Faults, one at a time,
each followed by a quiet window: listener SIGKILL (a standby running), worker SIGKILL,
broker restarted, Redis paused 3 s (SIGSTOP/SIGCONT), MariaDB failover (primary SIGKILLed,
replica promoted), Redis Sentinel failover (primary SIGKILLed). A change counts under the
fault in whose window it was committed. At the end the keys still present after a drain
are the changes never invalidated.

"Gone" is when the checker saw it gone (it polls every ~2 ms, and cannot see anything while
the cache Redis itself is paused or failing over): an upper bound.

While the cache Redis is paused or failing over, nobody can delete there: a change committed
then cannot be gone before the Redis is back, whatever the sidecar does. So the checker also
records when the cache Redis was out of its reach (a poll that failed or took over STALL_S),
and the report adds the changes still present 1 s after the later of their commit and the end
of an outage they lived through: the sidecar's own share of the time past 1 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import pymysql
import redis

from adapters.mysql.sources import SourcePicker
from adapters.redis.connection import connect_redis
from adapters.redis.replica_ack import ReplicaAck
from config import ListenerSettings
from config.mysql import MySQLSettings
from config.query import Query
from tests.private_servers import (
    PrivateMariaDB,
    PrivateRedis,
    SentinelGroup,
    caught_up,
    gtid_replica,
    promote,
    replicate,
)
from tests.services import (
    connect,
    fast_lane_known,
    free_port,
    schema_statements,
    service_env,
    unique,
    wait_for,
)
from tests.sidecar import Sidecar

FAULTS = (
    "listener SIGKILL",
    "worker SIGKILL",
    "broker restarted",
    "Redis paused 3 s",
    "MariaDB failover",
    "Sentinel failover",
)
WARMUP_S = 5.0
WINDOW_S = 12.0  # after each fault: quiet changes before the next one
DRAIN_S = 90.0  # after the last: how long a change may take before it counts as never
POLL_S = 0.002
STALL_S = 0.5  # a checker's poll this slow means the cache Redis was out of reach


def pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Change:
    key: str
    chunk: str
    committed: float  # time.time() once the commit returned
    phase: str
    gone: float | None = None
    lost: bool = False  # the commit was acknowledged, then lost with the old primary


@dataclass
class Ledger:
    """Every change committed, and which are still waiting for their key to go."""

    changes: list[Change] = field(default_factory=list)
    waiting: dict[str, Change] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    phase: str = "steady"

    def add(self, change: Change) -> None:
        with self.lock:
            self.changes.append(change)
            self.waiting[change.key] = change

    def pending(self) -> list[Change]:
        with self.lock:
            return list(self.waiting.values())

    def gone(self, change: Change, at: float) -> None:
        with self.lock:
            change.gone = at
            self.waiting.pop(change.key, None)


class Writer(threading.Thread):
    """Commits one change a 1/rate seconds, each to its own chunk; reconnects to whichever
    source is the primary (adapters.mysql.sources) when the database fails over."""

    def __init__(
        self,
        sources: tuple[MySQLSettings, ...],
        car: Sidecar,
        ledger: Ledger,
        rate: int,
        chunks: int,
    ) -> None:
        super().__init__(daemon=True)
        self.chunks = chunks  # one change per chunk: the writer stops after the last
        self.picker = SourcePicker(sources, connect_timeout=2)
        self.car, self.ledger, self.rate = car, ledger, rate
        self.stopping = threading.Event()
        self.next_chunk = 0
        self.uncertain = 0  # commits whose outcome is unknown (the server died under them)

    def run(self) -> None:
        conn: pymysql.Connection | None = None
        start = time.perf_counter()
        sent = 0
        while not self.stopping.is_set():
            ahead = sent / self.rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
            elif ahead < -0.1:  # held up (a failover, the CPU): go on at the rate, no burst
                start = time.perf_counter() - sent / self.rate
            sent += 1
            n = self.next_chunk
            if n >= self.chunks:
                break
            self.next_chunk += 1
            try:
                if conn is None:
                    conn = self.picker.connect()
                with conn.cursor() as cur:
                    cur.execute(
                        "UPDATE megamind_chunks SET priority_score = 0.75 WHERE chunk_id = %s",
                        (f"soak{n}",),
                    )
                change = Change(key_of(self.car, n), f"soak{n}", time.time(), self.ledger.phase)
                self.ledger.add(change)
            except pymysql.Error:
                self.uncertain += 1
                conn = None
                time.sleep(0.05)


def key_of(car: Sidecar, n: int) -> str:
    return car.keys.build(Query((f"soak{n}",)))


class Checker(threading.Thread):
    """Polls the keys of the changes in flight; records when each is gone."""

    def __init__(self, client: redis.Redis, ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.client, self.ledger = client, ledger
        self.stopping = threading.Event()
        self.outages: list[tuple[float, float]] = []  # the cache Redis out of reach: from, to
        self._down_since: float | None = None

    def run(self) -> None:
        while not self.stopping.is_set():
            pending = self.ledger.pending()
            if pending:
                asked = time.time()
                try:
                    pipe = self.client.pipeline(transaction=False)
                    for change in pending:
                        pipe.exists(change.key)
                    there = pipe.execute()
                except redis.RedisError:
                    if self._down_since is None:
                        self._down_since = asked
                    time.sleep(0.05)
                    continue
                now = time.time()
                if self._down_since is not None:
                    self.outages.append((self._down_since, now))
                    self._down_since = None
                elif now - asked > STALL_S:
                    self.outages.append((asked, now))
                for change, present in zip(pending, there, strict=True):
                    if not present:
                        self.ledger.gone(change, now)
            time.sleep(POLL_S)


class Soak:
    """One rate's run: its own servers, sidecar, writer and checker."""

    def __init__(
        self, rate: int, workdir: Path, services: dict[str, str], faults: tuple[str, ...]
    ) -> None:
        self.rate, self.workdir, self.services = rate, workdir, services
        self.faults = faults
        self.stack = ExitStack()
        self.ledger = Ledger()

    def start(self) -> None:
        s = self.stack
        self.db = PrivateMariaDB(self.workdir / "db")
        self.db.start()
        s.callback(self.db.stop)
        self.db_replica = gtid_replica(self.workdir / "db-replica")
        self.db_replica.start()
        s.callback(self.db_replica.stop)
        replicate(self.db, self.db_replica)
        self.redis = SentinelGroup(self.workdir / "redis", down_after_ms=5000)
        self.redis.start()
        s.callback(self.redis.stop)
        self.broker = PrivateRedis(self.workdir / "broker", persistent=True)
        self.broker.start()
        s.callback(self.broker.stop)
        database = unique("soak_")
        self.db.sql(f"CREATE DATABASE `{database}`", f"USE `{database}`", *schema_statements())
        wait_for(lambda: caught_up(self.db, self.db_replica), timeout=30, what="schema replicated")
        env = {
            **self.services,
            "PRIMER_MYSQL_URL": f"{self.db.url},{self.db_replica.url}",
            "PRIMER_REDIS_URL": self.redis.url,
            "PRIMER_BROKER_URL": self.broker.url,
        }
        # redis-py's default retries (10, backoff capped at 1 s): a client given many more
        # was seen stuck retrying the dead primary long after the failover.
        self.client = connect_redis(self.redis.url, socket_timeout=5, socket_connect_timeout=2)
        conn = connect(self.db.params, database)
        self.car = Sidecar(
            env,
            database,
            conn,
            self.client,
            self.workdir,
            second_pass_ms=250,
            leader_ttl_ms=ListenerSettings.leader_ttl_ms,
            redeliver_after_s=30,
        )
        s.callback(self.car.stop)
        chunks = int(self.rate * (WARMUP_S + WINDOW_S * len(self.faults) + 5))
        self.chunks = chunks
        self._seed(conn, chunks)
        self.workers = [self.car.start_worker(name=f"w{i}") for i in range(2)]
        port = free_port()
        self.leader = self.car.start_listener(metrics_port=port)
        self.car.sync(timeout=120)
        self.car.checkpointed(timeout=120)  # past the cold start's flush of every primer key
        self.car.plant(*(Query((f"soak{n}",)) for n in range(chunks)))
        # Steady state: the listeners know the planted keys (a server fills its keys over
        # time, not 40,000 at once just before the first change). The standby's start-up
        # scan finds them; the leader's next rescan does.
        self.standby = self.car.start_listener_standby()
        wait_for(
            lambda: fast_lane_known(port) >= chunks,
            timeout=60,
            what="the leader's fast lane to know the planted keys",
        )

    def _seed(self, conn: pymysql.Connection, chunks: int) -> None:
        with conn.cursor() as cur:
            for first in range(0, chunks, 1000):
                rows = [
                    (f"soak{n}", "GLOBAL", "c", f"soak{n}", "0.50", "required")
                    for n in range(first, min(chunks, first + 1000))
                ]
                cur.executemany(
                    "INSERT INTO megamind_chunks (chunk_id, realm_id, content, element_category,"
                    " priority_score, enforcement_level) VALUES (%s, %s, %s, %s, %s, %s)",
                    rows,
                )

    def run(self) -> None:
        writer = Writer(self.car.settings.sources, self.car, self.ledger, self.rate, self.chunks)
        checker = Checker(self.client, self.ledger)
        checker.start()
        writer.start()
        time.sleep(WARMUP_S)  # steady state, measured as "steady"
        for fault in self.faults:
            self.ledger.phase = fault
            print(f"  {time.strftime('%H:%M:%S')} {fault}", flush=True)
            self.inject(fault)
            time.sleep(WINDOW_S)  # the window whose changes count under this fault
        writer.stopping.set()
        writer.join(30)
        deadline = time.monotonic() + DRAIN_S
        while self.ledger.pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        checker.stopping.set()
        checker.join(10)
        self.uncertain = writer.uncertain
        self.outages = checker.outages
        self._find_lost()

    def _find_lost(self) -> None:
        """A change whose key is still there may be one the database itself lost: committed
        on the old primary, never replicated, never read by the listener (async
        replication). The new primary does not have it, so the key is right to stay."""
        stuck = self.ledger.pending()
        if not stuck:
            return
        conn = SourcePicker(self.car.settings.sources).connect()
        try:
            with conn.cursor() as cur:
                for change in stuck:
                    cur.execute(
                        "SELECT priority_score FROM megamind_chunks WHERE chunk_id = %s",
                        (change.chunk,),
                    )
                    row = cur.fetchone()
                    change.lost = row is not None and str(row[0]) != "0.75"
        finally:
            conn.close()

    def inject(self, fault: str) -> None:
        if fault == "listener SIGKILL":
            os.killpg(self.leader.proc.pid, signal.SIGKILL)
            self.leader, self.standby = self.standby, self.car.start_listener_standby()
        elif fault == "worker SIGKILL":
            os.killpg(self.workers[0].proc.pid, signal.SIGKILL)
            self.workers = [self.workers[1], self.car.start_worker(name="w-next")]
        elif fault == "broker restarted":
            self.broker.stop()
            self.broker.start()
        elif fault == "Redis paused 3 s":
            primary = self._cache_primary()
            primary.pause()
            time.sleep(3)
            primary.resume()
        elif fault == "MariaDB failover":
            self.db.kill()
            promote(self.db_replica)
        elif fault == "Sentinel failover":
            self._cache_primary().kill()
            self.redis.relay.drop()

    def _cache_primary(self) -> PrivateRedis:
        port = self.redis.primary_port()
        return self.redis.primary if port == self.redis.primary.port else self.redis.replica

    def stop(self) -> None:
        self.stack.close()


def since_reachable(change: Change, outages: list[tuple[float, float]]) -> float:
    """From the later of the commit and the end of the last outage the change lived through
    to its key gone (seconds)."""
    assert change.gone is not None
    start = change.committed
    for began, ended in outages:
        if began < change.gone and ended > change.committed:
            start = max(start, ended)
    return change.gone - start


def report(rate: int, soak: Soak) -> None:
    changes = soak.ledger.changes
    outages = soak.outages
    print(f"\n## {rate} commits/s: commit -> key gone (ms), per fault window and overall")
    print(
        f"{'window':20} {'n':>6} {'p50':>8} {'p99':>8} {'p99.9':>8} {'p99.99':>8} "
        f"{'max':>9} {'>1 s':>6} {'never':>6} {'lost':>5} {'>1 s after back':>15}"
    )
    for phase in ("steady", *soak.faults, "overall"):
        rows = [c for c in changes if phase in ("overall", c.phase)]
        done = [(c.gone - c.committed) * 1000 for c in rows if c.gone is not None]
        never = sum(1 for c in rows if c.gone is None and not c.lost)
        lost = sum(1 for c in rows if c.lost)
        late = sum(1 for ms in done if ms > 1000) + never
        own = never + sum(1 for c in rows if c.gone is not None and since_reachable(c, outages) > 1)
        print(
            f"{phase:20} {len(rows):6d} {pct(done, 0.5):8.1f} {pct(done, 0.99):8.1f} "
            f"{pct(done, 0.999):8.1f} {pct(done, 0.9999):8.1f} {max(done, default=0):9.1f} "
            f"{late:6d} {never:6d} {lost:5d} {own:15d}"
        )
    print(
        f"(commits with an unknown outcome, not counted: {soak.uncertain}; lost: acknowledged "
        "by the old primary, absent from the promoted one, so their keys rightly stay)"
    )
    if changes:
        within = sum(1 for c in changes if c.gone is not None and c.gone - c.committed <= 1)
        kept = sum(1 for c in changes if not c.lost)
        print(f"gone within 1 s: {100 * within / kept:.3f}% of {kept} changes the database kept")
        after = sum(1 for c in changes if c.gone is not None and since_reachable(c, outages) <= 1)
        spans = ", ".join(f"{ended - began:.1f} s" for began, ended in outages) or "none"
        print(
            f"gone within 1 s of the later of commit and the cache Redis back: "
            f"{100 * after / kept:.3f}% (the cache Redis out of the checker's reach: {spans})"
        )


def wait_cost(workdir: Path, rounds: int = 2000) -> None:
    """What cache.wait_replicas costs a batch: ReplicaAck.confirm() (marker write + WAIT 1)
    against the same pipeline without WAIT, on a primary with one replica (loopback)."""
    group = SentinelGroup(workdir / "wait-cost")
    group.start()
    try:
        client = group.primary.client()
        ack = ReplicaAck(client, "bench:", wanted=1, timeout_ms=1000)
        plain = ReplicaAck(client, "bench:", wanted=0, timeout_ms=1000)

        def timed(confirm: ReplicaAck) -> list[float]:
            out = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                if confirm.wanted:
                    confirm.confirm()
                else:
                    pipe = client.pipeline(transaction=False)
                    pipe.incr("bench:replica-ack")
                    pipe.expire("bench:replica-ack", 3600)
                    pipe.execute()
                out.append((time.perf_counter() - t0) * 1000)
            return out

        base, waited = timed(plain), timed(ack)
        print("\n## WAIT's cost per batch (cache.wait_replicas = 1, one replica, loopback)")
        for name, got in (("marker write, no WAIT", base), ("marker write + WAIT 1", waited)):
            print(
                f"{name:24} p50 {pct(got, 0.5):6.3f} ms  p99 {pct(got, 0.99):6.3f} ms  (n={rounds})"
            )
        print(f"added per batch: p50 {pct(waited, 0.5) - pct(base, 0.5):.3f} ms")
    finally:
        group.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--keep", type=Path, help="work (and leave the logs) under this dir")
    args = parser.parse_args()
    services = service_env()
    with TemporaryDirectory(prefix="primer-soak-") as tmp:
        wait_cost(Path(tmp))
    for rate in args.rates:
        with TemporaryDirectory(prefix="primer-soak-") as tmp:
            workdir = args.keep / f"rate{rate}" if args.keep else Path(tmp)
            soak = Soak(rate, workdir, services, tuple(args.faults))
            try:
                soak.start()
                soak.run()
            finally:
                soak.stop()
            report(rate, soak)


if __name__ == "__main__":
    main()
