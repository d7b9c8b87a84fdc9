"""Leases, measured: what the primer server's readers see, four ways, in one run.

    set -a; . .run/services.env; set +a; python -m bench.bench_leases

1. The simulated primer server of bench_warming (reader threads; access-count bumps on every
   read; bursts of element changes), over the three seed patterns and forty others, their
   popularity Zipf-like (the n-th pattern read in proportion to 1/n, seed patterns first):
   - TTL only: no sidecar, plain GET and SET;
   - sidecar, plain fills: GET, SET on a miss, the 250 ms second pass on;
   - sidecar, lease fills, second pass off: FCALL primer_cache_read, primer_cache_fill;
   - the same with refresh on (hot keys recomputed after each sweep).
   Hit rate in the steady state (every pattern is read once before the reads that count, so
   each key's very first miss, which no sidecar can avoid, is left out), and stale reads: a
   hit whose content differs from the database once the writes were quiet for 1 s. A lease
   reader told `busy` waits up to 100 ms for the other reader's or the refresh's fill (a hit
   if it lands), then reads the database without filling (a miss).
2. The cost of one read that hits: FCALL primer_cache_read against a plain GET of the same
   key, interleaved round trips, as a ratio.

Everything runs in throwaway schemas, key prefixes and queues, removed afterwards.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import redis

from adapters.redis import leases
from bench.bench_warming import (
    BURST_WRITES,
    BURSTS,
    PrimerServer,
    ReadStats,
    environment,
    read_through,
    seed_keys_present,
)
from config.query import SEED_WARM_PATTERNS, Query
from tests.services import mysql_settings, service_env, wait_for
from tests.warm_fixtures import CATEGORIES, LEVELS, seed_elements

LEASE_MS = 2_000
READERS = 3
# 3 readers at 20 reads/s each: their access-count bumps (up to 100 rows a read) are binlog
# noise the listener must read through; much more and, on a loaded 2-core machine, the
# listener falls behind and reads turn stale from lag alone.
READ_INTERVAL_S = 0.05
BUSY_WAIT_S = 0.1  # a busy reader waits this long at most for the filler's value
BUSY_POLL_S = 0.005


def read_patterns(count: int = 40) -> tuple[Query, ...]:
    """The seed's three warm patterns and `count` others the readers also ask for."""
    rng = random.Random(40)
    others: list[Query] = []
    while len(others) < count:
        query = Query(
            tuple(rng.sample(CATEGORIES, rng.choice((0, 1, 1, 2)))),
            rng.choice((0.0, 0.3, 0.5, 0.8)),
            rng.choice(("all", *LEVELS)),
            limit=rng.choice((10, 20, 50, 100)),
        )
        if query not in others and query not in SEED_WARM_PATTERNS:
            others.append(query)
    return (*SEED_WARM_PATTERNS, *others)


def zipf(count: int) -> tuple[float, ...]:
    return tuple(1 / rank for rank in range(1, count + 1))


class LeasedPrimerServer(PrimerServer):
    """Reads with primer_cache_read and fills with primer_cache_fill, as docs/design.md says. On
    `busy` it waits for the other reader's fill a little (BUSY_WAIT_S at most, polling), then
    reads the database itself without filling."""

    def lookup(self, key: str) -> tuple[bytes | None, str | None]:
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:
            answer = leases.read(self.cache, key, LEASE_MS)
            if answer.kind == "hit":
                return answer.payload, None
            if answer.kind == "lease" or time.monotonic() >= deadline:
                return None, answer.token
            self.stats.busy += 1
            time.sleep(BUSY_POLL_S)

    def store(self, key: str, value: bytes, token: str | None) -> None:
        if token is not None:
            leases.fill(self.cache, key, token, value, self.env.settings.cache.ttl_seconds)


MODES = {
    "ttl-only": ("TTL only (no sidecar)", PrimerServer, {}),
    "plain": ("sidecar, plain fills, second pass", PrimerServer, {"second_pass_ms": 250}),
    "lease": ("sidecar, lease fills, no second pass", LeasedPrimerServer, {}),
    "refresh": ("... and refresh on (the default)", LeasedPrimerServer, {"refresh": True}),
}


def run_mode(
    mode: str, base: dict[str, str], mysql: dict[str, Any], workdir: Path, args: Any
) -> ReadStats:
    _label, server, options = MODES[mode]
    with environment(base, mysql, workdir, **options) as env:
        ids = seed_elements(env.conn, 2000, random.Random(3))
        leases.load_library(env.cache)
        if mode != "ttl-only":
            env.start_worker()
            env.start_listener()
            wait_for(lambda: seed_keys_present(env), timeout=60, what="cold-start warm")
        return read_through(
            env,
            mysql,
            ids,
            server=server,
            patterns=read_patterns(),
            readers=args.readers,
            interval_s=args.interval,
            weights=zipf(len(read_patterns())),
            primed=True,
        )


def read_cost(client: redis.Redis, key: str, rounds: int) -> tuple[float, float]:
    """Microseconds per hit: a plain GET, and FCALL primer_cache_read; interleaved in blocks
    so that load from elsewhere falls on both alike."""
    client.set(key, b"x" * 2000, ex=600)
    leases.load_library(client)
    get_s = fcall_s = 0.0
    block = 500
    for _ in range(max(rounds // block, 1)):
        t0 = time.perf_counter()
        for _ in range(block):
            client.get(key)
        t1 = time.perf_counter()
        for _ in range(block):
            client.fcall("primer_cache_read", 1, key, LEASE_MS)
        t2 = time.perf_counter()
        get_s += t1 - t0
        fcall_s += t2 - t1
    client.delete(key)
    n = max(rounds // block, 1) * block
    return get_s / n * 1e6, fcall_s / n * 1e6


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, not {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--readers", type=int, default=READERS)
    parser.add_argument(
        "--read-interval",
        "--interval",
        dest="interval",
        type=positive_seconds,
        default=READ_INTERVAL_S,
        metavar="SECONDS",
        help=f"seconds between a reader's reads, > 0 (default {READ_INTERVAL_S})",
    )
    parser.add_argument("--rounds", type=int, default=20_000, help="reads per side in part 2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = service_env()
    mysql = mysql_settings(base).connect_kwargs()
    results: dict[str, ReadStats] = {}
    with TemporaryDirectory(prefix="bench-leases-") as tmp:
        for mode in args.modes:
            results[mode] = run_mode(mode, base, mysql, Path(tmp), args)
            print(f"{mode}: {results[mode]}", flush=True)
    client = redis.Redis.from_url(base["PRIMER_REDIS_URL"])
    key = f"bench-{random.randrange(10**9)}:megamind:primer:primer::0.0:all:priority_desc:100"
    get_us, fcall_us = read_cost(client, key, args.rounds)

    print(
        f"\n1. simulated primer server, {args.readers} readers over "
        f"{len(read_patterns())} patterns (Zipf), {BURSTS} bursts of {BURST_WRITES} changes; "
        "steady state (each pattern read once first)"
    )
    print(f"   {'':<40}{'reads':>8}{'hit rate':>10}{'judged':>8}{'stale':>7}{'busy':>6}")
    for mode, stats in results.items():
        print(
            f"   {MODES[mode][0]:<40}{stats.hits + stats.misses:>8}{stats.hit_rate:>10.2%}"
            f"{stats.judged:>8}{stats.stale:>7}{stats.busy:>6}"
        )
    print(
        f"\n2. one read that hits ({args.rounds} each, interleaved): GET {get_us:.1f} us, "
        f"FCALL primer_cache_read {fcall_us:.1f} us = {fcall_us / get_us:.2f}x"
    )


if __name__ == "__main__":
    main()
