"""The client library's read cost, in process (no HTTP), as ratios against baselines run in
the same script (issue 18's in-process targets):

1. An L1 hit through PrimerCache.get against a plain locked LRU lookup (an OrderedDict under a
   threading.Lock, get and move_to_end) of the same key: target at most 2x.
2. A Redis hit through PrimerCache.get with the L1 off (FCALL primer_cache_read, then decoding
   the value) against a plain GET of the same value with the same decoding: target at most
   1.3x. Interleaved rounds, so a drift in the machine's load hits both sides alike.
3. The L1 under churn, issue 18's experiment: 8 reader threads sharing one L1 over 40 keys
   while a writer changes one about 20 times a second and deletes its key the sidecar's way
   (primer_cache_invalidate). A read is stale when it returns a version older than one whose
   delete had finished more than 200 ms before the read began. The client against the
   README's former hand-written recipe (RESP2 REDIRECT subscriber drained by a thread, the
   hit stored after its reply), the same time each.

    set -a; . .run/services.env; set +a; python -m bench.bench_client [--rounds N] [--churn-s S]

The response is a primer response of 20 elements (a few KB of JSON, zlib-compressed).
"""

from __future__ import annotations

import argparse
import bisect
import os
import random
import statistics
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import redis
from primer_cache_client import PrimerCache, PrimerQuery
from primer_cache_client.functions import parse_answer
from primer_cache_client.values import decode, encode

from adapters.redis import leases

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
    parser.add_argument("--churn-s", type=float, default=20.0, help="per reader kind; 0: skip")
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
        if args.churn_s > 0:
            for name, make in (("client", ClientReader), ("hand-written recipe", RecipeReader)):
                result = churn(url, admin, f"{prefix}churn:{name[0]}:", make, args.churn_s)
                print(
                    f"churn, {name:20s} {result['reads']:8d} reads, "
                    f"L1 hit rate {result['l1_hits'] / max(result['reads'], 1):.1%}, "
                    f"{result['changes']} changes, stale > 200 ms: {result['stale']} "
                    f"(worst {result['worst_ms']:.0f} ms)"
                )
    finally:
        for name in admin.scan_iter(match=f"*{prefix}*", count=1000):
            admin.unlink(name)
        admin.close()


# ---- 3. the L1 under churn ---------------------------------------------------------------
class Versions:
    """The database: a version per key, and when each version's delete finished."""

    def __init__(self, keys: list[str]) -> None:
        self.lock = threading.Lock()
        self.current = dict.fromkeys(keys, 1)
        self.done: dict[str, tuple[list[float], list[int]]] = {k: ([0.0], [1]) for k in keys}

    def load(self, key: str) -> dict[str, Any]:
        with self.lock:
            return {"global_elements": [], "v": self.current[key]}

    def required(self, key: str, before: float) -> int:
        """The newest version whose delete had finished by `before`."""
        with self.lock:
            times, versions = self.done[key]
            index = bisect.bisect_right(times, before) - 1
            return versions[index]


class ClientReader:
    def __init__(self, url: str, prefix: str) -> None:
        self.cache = PrimerCache(url, prefix=prefix, metrics=False)
        assert self.cache.tracking.wait_established(10)
        self.queries: dict[str, PrimerQuery] = {}

    def read(self, key: str, query: PrimerQuery, versions: Versions) -> dict[str, Any]:
        return self.cache.get(query, lambda q: versions.load(key))

    def l1_hits(self) -> int:
        return int(self.cache.stats()["l1"]["hits"])

    def close(self) -> None:
        self.cache.close()


class RecipeReader:
    """README's former recipe, as written there: RESP2, a subscriber on
    __redis__:invalidate, tracking REDIRECTed to it, a thread draining it into the L1; a hit
    is stored in the L1 after its reply, and so is a fill."""

    def __init__(self, url: str, prefix: str) -> None:
        self.redis = redis.Redis.from_url(url, protocol=2)
        self.sub_client = redis.Redis.from_url(url, protocol=2)
        self.sub = self.sub_client.pubsub(ignore_subscribe_messages=True)
        self.sub.subscribe("__redis__:invalidate")
        self.sub.get_message(timeout=1)
        sub_id = self._sub_id()
        self.tracker = redis.Redis.from_url(url, protocol=2, single_connection_client=True)
        self.tracker.execute_command(
            "CLIENT", "TRACKING", "on", "REDIRECT", sub_id, "BCAST", "PREFIX", prefix
        )
        self.lock = threading.Lock()
        self.copies: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.stop = threading.Event()
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()

    def _sub_id(self) -> int:
        conn = self.sub.connection
        assert conn is not None
        host, port = conn._sock.getsockname()[:2]  # type: ignore[union-attr]
        (found,) = [c for c in self.redis.client_list() if c["addr"] == f"{host}:{port}"]
        return int(found["id"])

    def _drain(self) -> None:
        while not self.stop.is_set():
            message = self.sub.get_message(timeout=0.5)
            if message is None:
                continue
            keys = message["data"]
            with self.lock:
                if keys is None:
                    self.copies.clear()
                else:
                    for key in keys:
                        self.copies.pop(key.decode(), None)

    def read(self, key: str, query: PrimerQuery, versions: Versions) -> dict[str, Any]:
        with self.lock:
            copy = self.copies.get(key)
            if copy is not None:
                self.hits += 1
                return copy
        deadline = time.monotonic() + 0.1
        while True:
            answer = parse_answer(self.redis.fcall("primer_cache_read", 1, key, 5000))
            if answer.kind == "hit":
                response = decode(answer.payload)
                with self.lock:
                    self.copies[key] = response
                return response
            if answer.kind == "lease":
                response = versions.load(key)
                value = encode(response, compression=True)
                self.redis.fcall("primer_cache_fill", 1, key, answer.payload, value, 3600)
                with self.lock:
                    self.copies[key] = response
                return response
            if time.monotonic() > deadline:
                return versions.load(key)
            time.sleep(0.005)

    def l1_hits(self) -> int:
        return self.hits

    def close(self) -> None:
        self.stop.set()
        self.drainer.join(2)
        self.sub.close()
        self.sub_client.close()
        self.tracker.close()
        self.redis.close()


def churn(
    url: str, admin: redis.Redis, prefix: str, make: Callable[[str, str], Any], seconds: float
) -> dict[str, Any]:
    queries = [PrimerQuery(include_categories=(f"c{n}",)) for n in range(40)]
    keys = [q.key(prefix) for q in queries]
    versions = Versions(keys)
    reader = make(url, prefix)
    stop = threading.Event()
    counts = {"reads": 0, "stale": 0, "changes": 0, "worst_ms": 0.0}
    counts_lock = threading.Lock()

    def write() -> None:
        rng = random.Random(1)
        while not stop.wait(0.05):
            key = rng.choice(keys)
            with versions.lock:
                versions.current[key] += 1
                version = versions.current[key]
            leases.invalidate(admin, [[key.encode()]], "IDLETIME", 0, 1)
            with versions.lock:
                times, numbers = versions.done[key]
                times.append(time.monotonic())
                numbers.append(version)
            counts["changes"] += 1

    def read(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            n = min(int(rng.paretovariate(1.2)) - 1, len(keys) - 1)
            began = time.monotonic()
            response = reader.read(keys[n], queries[n], versions)
            required = versions.required(keys[n], began - 0.2)
            stale = response["v"] < required
            with counts_lock:
                counts["reads"] += 1
                if stale:
                    counts["stale"] += 1
                    times, numbers = versions.done[keys[n]]
                    first = times[numbers.index(response["v"] + 1)]
                    counts["worst_ms"] = max(counts["worst_ms"], (began - first) * 1000)

    threads = [threading.Thread(target=read, args=(seed,)) for seed in range(8)]
    threads.append(threading.Thread(target=write))
    for thread in threads:
        thread.start()
    time.sleep(seconds)  # the measured run's length (not waiting for a condition)
    stop.set()
    for thread in threads:
        thread.join(10)
    counts["l1_hits"] = reader.l1_hits()
    reader.close()
    return counts


def _never(query: PrimerQuery) -> dict:
    raise AssertionError("a hit must not call the loader")


if __name__ == "__main__":
    main()
