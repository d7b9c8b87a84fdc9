"""The client library's read cost, in process (no HTTP), as ratios against baselines run in
the same script (issue 18's in-process targets):

1. An L1 hit through PrimerCache.get against a plain locked LRU lookup (an OrderedDict under a
   threading.Lock, get and move_to_end) of the same key: target at most 2x.
2. A Redis hit through PrimerCache.get with the L1 off (FCALL primer_cache_read, then decoding
   the value) against a plain GET of the same value with the same decoding: target at most
   1.3x. Interleaved rounds, so a drift in the machine's load hits both sides alike.

    set -a; . .run/services.env; set +a; python -m bench.bench_client [--rounds N]

The response is a primer response of 20 elements (a few KB of JSON, zlib-compressed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

import redis
from primer_cache_client import PrimerCache, PrimerQuery
from primer_cache_client.values import decode

from adapters import leases

QUERY = PrimerQuery(include_categories=("security",), limit=20)


def sample_response() -> dict:
    return {
        "success": True,
        "global_elements": [
            {
                "element_id": f"chunk-{n}",
                "category": "security",
                "title": f"Rule {n}",
                "content": "Always validate input at the boundary. " * 4,
                "priority_score": 0.9,
                "enforcement_level": "required",
                "tags": ["auth", "input"],
                "last_updated": "2026-01-01T00:00:00Z",
                "realm_id": "GLOBAL",
            }
            for n in range(20)
        ],
        "total_count": 20,
    }


class LockedLRU:
    """The baseline: what a hand-written per-process LRU does on a hit."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: OrderedDict[str, dict] = OrderedDict()

    def get(self, key: str) -> dict | None:
        with self.lock:
            value = self.data.get(key)
            if value is not None:
                self.data.move_to_end(key)
            return value


def per_call(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def interleaved(
    a: Callable[[], object], b: Callable[[], object], n: int, rounds: int
) -> tuple[float, float]:
    """Median per-call time of a and of b over `rounds` alternating rounds of n calls."""
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(per_call(a, n))
        times_b.append(per_call(b, n))
    return statistics.median(times_a), statistics.median(times_b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    url = os.environ.get("PRIMER_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = redis.Redis.from_url(url)
    leases.load_library(admin)
    prefix = f"bench-client:{uuid.uuid4().hex[:8]}:"
    response = sample_response()
    key = QUERY.key(prefix)
    try:
        # 1. L1 hit vs a plain locked LRU lookup
        with PrimerCache(url, prefix=prefix, metrics=False) as cache:
            assert cache.tracking.wait_established(10), "tracking"
            cache.get(QUERY, lambda q: response)  # lease, fill
            deadline = time.monotonic() + 10
            while cache._path.l1.get(key) is None:  # the fill's own invalidation first
                assert time.monotonic() < deadline, "never entered the L1"
                cache.get(QUERY, lambda q: response)
            lru = LockedLRU()
            lru.data[key] = response
            l1_hit, lru_hit = interleaved(
                lambda: cache.get(QUERY, _never), lambda: lru.get(key), 20_000, args.rounds
            )
            assert cache.stats()["loader_calls"] == 1
        # 2. Redis hit through primer_cache_read vs a plain GET of the same value
        with PrimerCache(url, prefix=prefix, l1=False, metrics=False) as cache:
            value = admin.get(key)
            assert value is not None
            plain = redis.Redis.from_url(url)
            redis_hit, get_hit = interleaved(
                lambda: cache.get(QUERY, _never), lambda: decode(plain.get(key)), 300, args.rounds
            )
            fcall_raw, get_raw = interleaved(
                lambda: plain.fcall("primer_cache_read", 1, key, 5000),
                lambda: plain.get(key),
                300,
                args.rounds,
            )
            plain.close()
        print(f"L1 hit (PrimerCache.get)           {l1_hit * 1e6:8.2f} us")
        print(f"plain locked LRU lookup            {lru_hit * 1e6:8.2f} us")
        print(f"  ratio {l1_hit / lru_hit:.2f}x (target <= 2x)")
        print(f"Redis hit (PrimerCache.get, L1 off) {redis_hit * 1e6:8.1f} us")
        print(f"plain GET + decode                 {get_hit * 1e6:8.1f} us")
        print(f"  ratio {redis_hit / get_hit:.2f}x (target <= 1.3x)")
        print(f"bare FCALL primer_cache_read       {fcall_raw * 1e6:8.1f} us")
        print(f"bare GET                           {get_raw * 1e6:8.1f} us")
        print(f"  ratio {fcall_raw / get_raw:.2f}x (the function's own cost in Redis)")
    finally:
        admin.delete(key, f"primer-cache:lease:{{{key}}}{key}")
        admin.close()


def _never(query: PrimerQuery) -> dict:
    raise AssertionError("a hit must not call the loader")


if __name__ == "__main__":
    main()
