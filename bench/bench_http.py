"""The users' outcome, through HTTP: the reference primer server under the seed's load tests
while a writer changes GLOBAL elements, in one run, four ways.

    set -a; . .run/services.env; set +a; python -m bench.bench_http [--duration 5]

Configurations (each in its own throwaway schema, key prefix and queues, same data, same
writer schedule):
- none: every request runs the primer query;
- seed: the seed's plan as written (L1 LRU TTL 300 s + Redis GET/SET TTL 3600 s; no leases, no
  invalidation, no sidecar): the baseline;
- primer-cache: the client library, with the sidecar (listener + worker) running;
- ceiling: the same server answering each query's first answer from memory for ever (the cost
  of aiohttp and JSON-RPC alone; not judged for staleness).

Scenarios: the seed's PERFORMANCE_TEST_SCENARIOS (their parameters and concurrent users, copied
below) and its benchmark_primer_endpoint (50 concurrent calls), each run as that many users in a
closed loop for --duration seconds after a short warm-up. Meanwhile a writer process commits
about --rate changes a second to GLOBAL elements (priority and content), with a burst of
--burst changes every --burst-every seconds, and records, for each commit, when it began, when
COMMIT was sent and returned, and each scenario's answer as the database holds it after it
(read in the same transaction).

A response is stale when it equals no answer the database held at some moment during the
request, nor one it held until less than 1 s before the request began after the next change
to it began ("stale"); "strict" counts those that match no answer held during the request at
all (no grace). Hit rates come from the server's own counts (GET /mcp/stats) over each
scenario: overall (answered without the database), L1, and Redis (of the L1's misses).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import json
import logging
import multiprocessing
import random
import statistics
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiohttp
import pymysql
import redis

from adapters.mysql.primer_query import fresh_response
from adapters.redis import leases
from config import Settings
from config.query import Query
from core.response import comparable
from reference_server.tool import TOOL_NAME, parse_arguments
from tests.reference_server import ServerProcess, start_server
from tests.services import connect, mysql_settings, service_env
from tests.sidecar import Sidecar, isolated
from tests.warm_fixtures import seed_elements

# The seed's PERFORMANCE_TEST_SCENARIOS, and its benchmark_primer_endpoint (50 concurrent
# calls; the seed's target for cached responses, 15 ms, stands as its expected time).
SCENARIOS: tuple[dict[str, Any], ...] = (
    {
        "name": "basic_category_filter",
        "params": {"include_categories": ["security"]},
        "expected_response_time_ms": 500,
        "concurrent_users": 10,
    },
    {
        "name": "complex_multi_filter",
        "params": {
            "include_categories": ["security", "development"],
            "priority_threshold": 0.8,
            "enforcement_level": "required",
        },
        "expected_response_time_ms": 1000,
        "concurrent_users": 25,
    },
    {
        "name": "large_result_set",
        "params": {"limit": 500},
        "expected_response_time_ms": 5000,
        "concurrent_users": 5,
    },
    {
        "name": "benchmark_primer_endpoint",
        "params": {"include_categories": ["security", "development"], "limit": 50},
        "expected_response_time_ms": 15,
        "concurrent_users": 50,
        "rounds": True,  # 50 requests sent together, round after round
    },
)
CONFIGS = ("none", "seed", "primer-cache", "ceiling")
LABELS = {
    "none": "no cache",
    "seed": "seed plan as written",
    "primer-cache": "primer-cache + sidecar",
    "ceiling": "ceiling (memory)",
}
ELEMENTS = 2000  # chunks seeded (about 85% GLOBAL: large_result_set's 500 is a true limit)
GRACE_S = 1.0
IGNORED = ("access_count", "last_accessed", "updated_at")
WARMUP_S = 0.5
CLIENT_COUNTS = (
    "busy_waits",
    "busy_timeouts",
    "refused_fills",
    "cache_faults",
    "single_flight_waits",
)


def answer_hash(response: dict) -> str:
    """What a response says, as a short digest: without its retrieval time and the fields of
    columns whose changes invalidate nothing."""
    doc = json.dumps(comparable(response, IGNORED), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(doc.encode(), digest_size=12).hexdigest()


def scenario_query(scenario: dict[str, Any]) -> Query:
    return parse_arguments(scenario["params"]).query


# ---- the writer: changes, and the database's answers after each ------------------------------


@dataclass
class Commit:
    began: float  # monotonic, before the change's first statement
    sent: float  # before COMMIT
    done: float  # after COMMIT returned
    answers: dict[str, str]  # scenario -> answer_hash as the database holds it after this


def writer_main(
    mysql: dict[str, Any],
    database: str,
    settings: Settings,
    ids: list[str],
    queries: dict[str, Query],
    schedule: tuple[float, float, int],
    pipe: Connection,
) -> None:
    """Runs in its own process until `pipe` says stop; sends back its list of Commits."""
    rate, burst_every, burst = schedule
    conn = pymysql.connect(database=database, autocommit=False, **mysql)
    rng = random.Random(11)
    commits: list[Commit] = []

    def answers() -> dict[str, str]:
        return {name: answer_hash(fresh_response(conn, settings, q)) for name, q in queries.items()}

    conn.begin()
    commits.append(Commit(float("-inf"), float("-inf"), float("-inf"), answers()))
    conn.commit()
    pipe.send("ready")
    started = time.monotonic()
    next_steady, next_burst, n = started, started + burst_every, 0
    while not pipe.poll(0):
        now = time.monotonic()
        count = 1
        if now >= next_burst:
            count, next_burst = burst, next_burst + burst_every
        elif now < next_steady:
            pipe.poll(min(next_steady, next_burst) - now)
            continue
        for _ in range(count):
            n += 1
            began = time.monotonic()
            conn.begin()
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE megamind_chunks SET priority_score = %s, content = %s "
                    "WHERE chunk_id = %s",
                    (f"{rng.randint(0, 100) / 100:.2f}", f"change {n}", rng.choice(ids)),
                )
            after = answers()
            sent = time.monotonic()
            conn.commit()
            commits.append(Commit(began, sent, time.monotonic(), after))
        next_steady += 1.0 / rate
    pipe.send(commits)
    conn.close()


@contextmanager
def writing(
    car: Sidecar, mysql: dict[str, Any], ids: list[str], args: argparse.Namespace
) -> Iterator[list[Commit]]:
    """The writer process for the duration of the block; its commits fill the list after."""
    queries = {s["name"]: scenario_query(s) for s in SCENARIOS}
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    schedule = (args.rate, args.burst_every, args.burst)
    proc = ctx.Process(
        target=writer_main,
        args=(mysql, car.database, car.settings, ids, queries, schedule, there),
        daemon=True,
    )
    proc.start()
    assert here.poll(60) and here.recv() == "ready", "the writer did not start"
    commits: list[Commit] = []
    try:
        yield commits
    finally:
        here.send("stop")
        if here.poll(120):
            commits.extend(here.recv())
        proc.join(30)


# ---- judging -------------------------------------------------------------------------------


@dataclass
class Versions:
    """One scenario's answers over time, from the writer's commits (oldest first)."""

    hashes: list[str]
    sent: list[float]  # version k holds from its commit's COMMIT being sent...
    until: list[float]  # ...until the next commit that changed it returned
    next_began: list[float]  # when that next change began

    @classmethod
    def of(cls, commits: list[Commit], name: str) -> Versions:
        hashes: list[str] = []
        sent: list[float] = []
        until: list[float] = []
        next_began: list[float] = []
        for commit in commits:
            answer = commit.answers[name]
            if hashes and hashes[-1] == answer:
                continue  # this commit left the answer as it was
            if hashes:
                until.append(commit.done)
                next_began.append(commit.began)
            hashes.append(answer)
            sent.append(commit.sent)
        until.append(float("inf"))
        next_began.append(float("inf"))
        return cls(hashes, sent, until, next_began)

    def judge(self, answer: str, t0: float, t1: float) -> tuple[bool, bool]:
        """(stale, strictly stale) for `answer` received over [t0, t1]."""
        stale = strict = True
        last = bisect.bisect_right(self.sent, t1)  # versions visible by t1
        for k in range(last - 1, -1, -1):
            if self.until[k] + GRACE_S < t0:
                break  # this one and every older one ended too long before the request
            if self.hashes[k] != answer:
                continue
            if self.until[k] >= t0:
                return False, False
            if max(self.until[k], self.next_began[k] + GRACE_S) >= t0:
                stale = False
        return stale, strict


# ---- the load ------------------------------------------------------------------------------


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    windows: list[tuple[float, float, str]] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    stale: int = 0
    strict: int = 0
    stats: dict[str, float] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0


async def run_scenario(port: int, scenario: dict[str, Any], duration: float) -> Result:
    """`concurrent_users` users in a closed loop for `duration` seconds; or, for the seed's
    benchmark_primer_endpoint (`rounds`), rounds of that many requests sent together, the
    next round once the last reply of the previous one is in, as the seed's script does once."""
    users = scenario["concurrent_users"]
    url = f"http://127.0.0.1:{port}/mcp/jsonrpc"
    result = Result()
    digests: dict[bytes, str] = {}  # result bytes -> answer hash (many responses are equal)
    headers = {"Content-Type": "application/json"}
    bodies = [
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": f"test_{index}",
                "method": "tools/call",
                "params": {"name": TOOL_NAME, "arguments": scenario["params"]},
            }
        ).encode()
        for index in range(users)
    ]
    connector = aiohttp.TCPConnector(limit=users)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(index: int, record: bool) -> None:
            t0 = time.monotonic()
            started = time.perf_counter()
            try:
                async with session.post(url, data=bodies[index], headers=headers) as reply:
                    raw = await reply.read()
                    ok = reply.status == 200
            except aiohttp.ClientError:
                raw, ok = b"", False
            elapsed = time.perf_counter() - started
            t1 = time.monotonic()
            if not record:
                return
            tail = raw.split(b',"result":', 1)[-1] if ok else b""
            answer = digests.get(tail) if tail else None
            if answer is None and ok:
                answer = _answer_of(raw)
                if answer is not None:
                    digests[tail] = answer
            if answer is None:
                result.errors += 1
                return
            result.latencies_ms.append(elapsed * 1000)
            result.windows.append((t0, t1, answer))

        async def user(index: int, until: float, record: bool) -> None:
            while time.monotonic() < until:
                await one(index, record)

        async def load(until: float, record: bool) -> None:
            if scenario.get("rounds"):
                while time.monotonic() < until:
                    await asyncio.gather(*(one(i, record) for i in range(users)))
            else:
                await asyncio.gather(*(user(i, until, record) for i in range(users)))

        await load(time.monotonic() + WARMUP_S, False)
        before = fetch_stats(port)
        started = time.monotonic()
        await load(started + duration, True)
        result.seconds = time.monotonic() - started
        result.stats = stats_delta(before, fetch_stats(port))
    return result


def _answer_of(raw: bytes) -> str | None:
    try:
        reply = json.loads(raw)
        return answer_hash(json.loads(reply["result"]["content"][0]["text"]))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def fetch_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/mcp/stats", timeout=10) as reply:
        return json.loads(reply.read())


def tiers(doc: dict[str, Any]) -> dict[str, float]:
    """The server's counts as l1_hits, l1_misses, redis_hits, redis_misses, loads (the
    database's calls, counted by the server itself whatever the cache)."""
    stats = doc.get("stats", {})
    out = {
        name: float(stats.get(name, 0) or 0)
        for name in ("l1_hits", "l1_misses", "redis_hits", "redis_misses")
    }
    out["loads"] = float(doc.get("loader", {}).get("calls", 0))
    client = stats.get("client")
    if client:  # the client library's own counts, to explain a low hit rate or a slow tail
        for name in CLIENT_COUNTS:
            out[name] = float(client.get(name, 0) or 0)
        out["tracking_drops"] = float(client.get("tracking", {}).get("drops", 0))
        out["l1_bypassed"] = float(client.get("l1", {}).get("bypassed", 0))
    return out


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    b, a = tiers(before), tiers(after)
    return {name: a[name] - b.get(name, 0.0) for name in a}


# ---- one configuration ---------------------------------------------------------------------


@contextmanager
def serving(
    config: str, base: dict[str, str], mysql: dict[str, Any], workdir: Path, args: Any
) -> Iterator[tuple[ServerProcess, Sidecar, list[str]]]:
    """The server in `config`, in its own schema and key prefix (with the sidecar running for
    primer-cache), over the same seeded data; the GLOBAL element ids the writer changes."""
    cache = redis.Redis.from_url(base["PRIMER_REDIS_URL"])
    sidecar = config == "primer-cache"
    options = {"warm": True, "refresh": args.refresh, "second_pass_ms": 250} if sidecar else {}
    with isolated(Sidecar, base, mysql, cache, workdir, **options) as car:
        ids = [
            i
            for i in seed_elements(car.conn, ELEMENTS, random.Random(3))
            if car.image(i) is not None  # GLOBAL elements only
        ]
        if sidecar:
            leases.load_library(cache)
            car.start_worker(concurrency=2)
            car.start_listener()
            car.sync()
        server = start_server(
            car.env, workdir, config, args.server_processes, "--db-pool", str(args.db_pool)
        )
        try:
            yield server, car, ids
        finally:
            server.stop()


def run_config(
    config: str,
    base: dict[str, str],
    mysql: dict[str, Any],
    workdir: Path,
    args: argparse.Namespace,
    ceiling: tuple[int, dict[str, Result]] | None,
) -> dict[str, Result]:
    """Every chosen scenario against `config` while the writer writes; with `ceiling` (its
    server's port and results), each scenario is run against the ceiling right after, so both
    meet the same machine load."""
    results: dict[str, Result] = {}
    chosen = [s for s in SCENARIOS if s["name"] in args.scenarios]
    with (
        serving(config, base, mysql, workdir, args) as (server, car, ids),
        writing(car, mysql, ids, args) as commits,
    ):
        for scenario in chosen:
            name = scenario["name"]
            results[name] = asyncio.run(run_scenario(server.port, scenario, args.duration))
            if ceiling is not None:
                port, ceiling_results = ceiling
                ceiling_results[name] = asyncio.run(run_scenario(port, scenario, args.duration))
            print(f"  {config} {name}: done", flush=True)
    for scenario in chosen:
        result = results[scenario["name"]]
        versions = Versions.of(commits, scenario["name"])
        for t0, t1, answer in result.windows:
            stale, strict = versions.judge(answer, t0, t1)
            result.stale += stale
            result.strict += strict
    print(f"  {config}: the writer committed {len(commits) - 1} changes", flush=True)
    return results


# ---- report --------------------------------------------------------------------------------


def report(results: dict[str, dict[str, Result]]) -> None:
    head = (
        f"{'scenario':<27}{'configuration':<24}{'users':>6}{'reqs':>8}{'req/s':>9}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'hit':>8}{'L1':>8}{'Redis':>8}"
        f"{'stale':>7}{'strict':>7}{'err':>5}"
    )
    print("\n" + head)
    for scenario in SCENARIOS:
        name = scenario["name"]
        for config, per in results.items():
            if name not in per:
                continue
            r = per[name]
            n = len(r.latencies_ms)
            s = r.stats
            hit = 1 - s.get("loads", 0) / n if n else float("nan")
            l1 = s["l1_hits"] / max(s["l1_hits"] + s["l1_misses"], 1)
            l2 = s["redis_hits"] / max(s["redis_hits"] + s["redis_misses"], 1)
            judged = config != "ceiling"
            print(
                f"{name:<27}{LABELS[config]:<24}{scenario['concurrent_users']:>6}{n:>8}"
                f"{r.rate:>9.0f}{r.pct(0.5):>9.2f}{r.pct(0.95):>9.2f}{r.pct(0.99):>9.2f}"
                f"{hit:>8.2%}{l1:>8.2%}{l2:>8.2%}"
                f"{(r.stale if judged else '-'):>7}{(r.strict if judged else '-'):>7}{r.errors:>5}"
            )
    client_counts(results.get("primer-cache", {}))
    targets(results)


def client_counts(ours: dict[str, Result]) -> None:
    if not ours:
        return
    names = (*CLIENT_COUNTS, "l1_bypassed", "tracking_drops")
    print("\nprimer-cache client counts per scenario: " + ", ".join(names))
    for name, r in ours.items():
        print(f"  {name:<27}" + "".join(f"{int(r.stats.get(n, 0)):>10}" for n in names))


def targets(results: dict[str, dict[str, Result]]) -> None:
    ours = results.get("primer-cache", {})
    if not ours:
        return
    print("\ntargets (primer-cache):")
    seed = results.get("seed", {})
    ceiling = results.get("ceiling", {})
    for scenario in SCENARIOS:
        name = scenario["name"]
        if name not in ours:
            continue
        r = ours[name]
        n = len(r.latencies_ms)
        hit = 1 - r.stats.get("loads", 0) / n if n else 0.0
        bound = scenario["expected_response_time_ms"] / 10
        checks = [
            f"stale {r.stale} (seed plan: {seed[name].stale if name in seed else '-'})"
            f" {'ok' if r.stale == 0 else 'MISSED'}",
            f"hit {hit:.2%} {'ok' if hit >= 0.99 else 'MISSED'} (>= 99%)",
        ]
        if name == "benchmark_primer_endpoint":
            checks.append(
                f"p99 {r.pct(0.99):.2f} ms {'ok' if r.pct(0.99) <= 15 else 'MISSED'} (<= 15 ms)"
            )
        else:
            checks.append(
                f"p99 {r.pct(0.99):.2f} ms {'ok' if r.pct(0.99) <= bound else 'MISSED'}"
                f" (<= {bound:g} ms, 10x under {scenario['expected_response_time_ms']})"
            )
        if name in ceiling and ceiling[name].rate:
            ratio = r.rate / ceiling[name].rate
            checks.append(f"req/s {ratio:.2f} of the ceiling {'ok' if ratio >= 0.5 else 'MISSED'}")
        print(f"  {name}: " + "; ".join(checks))
    median = statistics.median(r.pct(0.5) for r in ours.values())
    print(f"  median p50 over scenarios: {median:.2f} ms")


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=[s["name"] for s in SCENARIOS],
        default=[s["name"] for s in SCENARIOS],
    )
    parser.add_argument("--duration", type=positive, default=5.0, help="seconds per scenario")
    parser.add_argument("--rate", type=positive, default=5.0, help="steady changes a second")
    parser.add_argument("--burst", type=int, default=20, help="changes in one burst")
    parser.add_argument("--burst-every", type=positive, default=4.0, help="seconds")
    parser.add_argument("--server-processes", type=int, default=1)
    parser.add_argument(
        "--no-refresh",
        dest="refresh",
        action="store_false",
        help="the sidecar without refresh (hot keys stay deleted after a sweep, not held)",
    )
    parser.add_argument("--db-pool", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = service_env()
    mysql = mysql_settings(base).connect_kwargs()
    connect(mysql).close()  # one clear failure up front when MariaDB is not there
    results: dict[str, dict[str, Result]] = {}
    configs = [c for c in args.configs if c != "ceiling"]
    # The ceiling runs beside primer-cache (else beside the last configuration), scenario by
    # scenario, so the two compare under the same load from elsewhere.
    pair = "primer-cache" if "primer-cache" in configs else (configs[-1] if configs else None)
    with TemporaryDirectory(prefix="bench-http-") as tmp, ExitStack() as stack:
        ceiling: tuple[int, dict[str, Result]] | None = None
        if "ceiling" in args.configs:
            server, _, _ = stack.enter_context(serving("ceiling", base, mysql, Path(tmp), args))
            ceiling = (server.port, {})
        for config in configs:
            print(f"{config}: ...", flush=True)
            paired = ceiling if config == pair else None
            results[config] = run_config(config, base, mysql, Path(tmp), args, paired)
        if ceiling is not None:
            results["ceiling"] = ceiling[1]
    print(
        f"\nthrough HTTP, {args.duration:g} s per scenario after {WARMUP_S} s warm-up; writer "
        f"{args.rate:g} changes/s + {args.burst} every {args.burst_every:g} s; "
        f"{args.server_processes} server process(es); loopback"
    )
    report(results)


if __name__ == "__main__":
    main()
