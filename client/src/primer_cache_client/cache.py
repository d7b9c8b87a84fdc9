"""PrimerCache: the primer server's read, sync (threads).

    response = cache.get(query, loader)

L1 (exact, see l1.py and tracking.py), then Redis through primer_cache_read, then the loader
under the lease, filled behind through primer_cache_fill. One load per key per process: the
threads that miss the same key while a load runs wait for it. A cache fault never reaches the
caller: the loader answers. An exception from the loader itself does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from primer_cache_client import stats as stats_mod
from primer_cache_client.functions import FILL, READ, RELEASE, Answer, parse_answer
from primer_cache_client.l1 import Ticket
from primer_cache_client.options import Options, sync_client, url_from_env
from primer_cache_client.query import PrimerQuery
from primer_cache_client.readpath import FAULTS, ReadPath
from primer_cache_client.values import decode, encode

Response = dict[str, Any]
Loader = Callable[[PrimerQuery], Response]


class _Flight:
    """One read in progress. Its lock is held by the reader doing the read until it is done;
    the readers waiting for it take and give back the lock (cheaper than an Event)."""

    __slots__ = ("done", "error", "joinable", "result", "shareable", "ticket")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Response | None = None
        self.error: BaseException | None = None
        self.ticket: Ticket | None = None
        self.shareable = True  # False: its answer is its reader's alone (see _fill)
        self.joinable = True  # False: it loads without a lease (no later request joins)


class PrimerCache:
    """The primer read path for threaded servers. Responses are shared with the L1: treat
    them as read-only."""

    def __init__(self, url: str | None = None, **options: Any) -> None:
        self._options = Options.build(url or url_from_env(), options)
        self._path = ReadPath(self._options)
        self._l1 = self._path.l1 if self._options.l1 else None
        self._l1_get = self._l1.get if self._l1 is not None else None
        self._key_memo = (self._options.prefix, self._options.key_template)
        self._redis: redis.Redis | None = None
        self._redis_lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()
        self._path.on_fork(self._after_fork)
        self._path.start_tracking()
        if self._options.metrics:
            stats_mod.export(self)

    @classmethod
    def from_env(cls, **options: Any) -> PrimerCache:
        """PRIMER_REDIS_URL, else REDIS_URL; options as keyword arguments."""
        return cls(url_from_env(), **options)

    # ---- the one call --------------------------------------------------------------------
    def get(self, query: PrimerQuery, loader: Loader) -> Response:
        try:
            key = query._keys[self._key_memo]  # the hot path: a key built before
        except (KeyError, AttributeError):
            key = self._path.key_of(query)  # builds it, or ValueError for a non-query
        l1_get = self._l1_get
        if l1_get is not None:
            hit = l1_get(key)
            if hit is not None:
                return hit
        started = time.perf_counter()
        try:
            return self._single_flight(key, query, loader)
        finally:
            self._path.counters.latency(time.perf_counter() - started)

    def _single_flight(self, key: str, query: PrimerQuery, loader: Loader) -> Response:
        l1 = self._l1
        while True:
            with self._flights_lock:
                flight = self._flights.get(key)
                # Join a read in progress only if no invalidation of the key has arrived since
                # it began, and it is not loading without a lease (nothing would tell it of a
                # change): its answer may predate a change this request began after.
                if (
                    flight is not None
                    and flight.joinable
                    and (l1 is None or l1.unchanged(key, flight.ticket))
                ):
                    leader = False
                else:
                    leader = True
                    flight = self._flights[key] = _Flight()
                    flight.ticket = l1.begin(key) if l1 is not None else None
            if leader:
                break
            self._path.counters.add("single_flight_waits")
            with flight.done:
                pass
            if flight.error is not None:
                raise flight.error
            if flight.shareable:
                assert flight.result is not None
                return flight.result
            # its rows changed while it loaded them: read again, after the change
        try:
            flight.result = self._read_through(key, query, loader, flight)
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._flights_lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.release()

    def _read_through(
        self, key: str, query: PrimerQuery, loader: Loader, flight: _Flight
    ) -> Response:
        """The read behind an L1 miss; the flight's ticket (taken before anything is sent)
        decides whether its Redis hit may enter the L1."""
        ticket = flight.ticket
        path, options, counters = self._path, self._options, self._path.counters
        l1 = self._l1
        if path.redis_skipped():
            counters.add("cache_faults")
            if l1 is not None:
                l1.finish(key, ticket, None)
            return self._load(query, loader)
        keep: Response | None = None
        try:
            deadline: float | None = None
            undecodable_seen = False
            while True:
                try:
                    answer = self._fcall_read(key)
                except FAULTS as exc:
                    path.fault(exc, READ)
                    return self._load(query, loader)
                if answer.kind == "hit":
                    try:
                        keep = decode(answer.payload)
                    except ValueError as exc:
                        counters.add("undecodable_values")
                        path.fault(exc, "decode")
                        if undecodable_seen or not self._delete(key):
                            return self._load(query, loader)
                        undecodable_seen = True
                        continue  # the next read takes the lease and fills a good value
                    counters.add("redis_hits")
                    return keep
                if answer.kind == "lease":
                    counters.add("redis_misses")
                    response = self._load(query, loader)
                    if not self._fill(key, answer.payload, response):
                        flight.shareable = False  # those waiting may have come after the change
                    return response
                # busy: another process (or the sidecar's refresh) is filling this key
                now = time.monotonic()
                if deadline is None:
                    counters.add("busy_waits")
                    counters.add("redis_misses")
                    deadline = now + options.busy_wait_s
                left = deadline - now
                if left <= 0 or answer.ms_left == 0:
                    counters.add("busy_timeouts")
                    flight.joinable = False  # a load without a lease: no later request joins
                    return self._load(query, loader)
                time.sleep(min(options.busy_poll_s, left, answer.ms_left / 1000))
        finally:
            if l1 is not None:
                l1.finish(key, ticket, keep)

    # ---- Redis ---------------------------------------------------------------------------
    def _client(self) -> redis.Redis:
        client = self._redis
        if client is None:
            with self._redis_lock:
                if self._redis is None:
                    self._redis = sync_client(self._options, self._path.cluster())
                    self._path.start_tracking()
                client = self._redis
        return client

    def _fcall(self, name: str, key: str, *args: Any) -> Any:
        client = self._client()
        try:
            return client.fcall(name, 1, key, *args)
        except redis.ResponseError as exc:
            if not self._path.function_missing(exc):
                raise
            self._load_library(client)
            return client.fcall(name, 1, key, *args)

    def _load_library(self, client: redis.Redis) -> None:
        """A Redis restarted without persistence has lost the library: load it (the same
        source the sidecar loads; an ACL without FUNCTION LOAD makes this a fault)."""
        try:
            client.function_load(self._path.library, replace=True)
        except redis.ResponseError as exc:
            if "already exists" not in str(exc):
                raise

    def _fcall_read(self, key: str) -> Answer:
        return parse_answer(self._fcall(READ, key, self._options.lease_ms))

    def _fill(self, key: str, token: bytes, response: Response) -> bool:
        """Fill under the lease; False when the fill was refused: the lease was revoked, so
        the rows changed while they were being loaded."""
        counters = self._path.counters
        try:
            value = encode(response, compression=self._options.compression)
        except (TypeError, ValueError) as exc:
            self._path.fault(exc, "encode")
            self._release(key, token)
            return True
        try:
            written = self._fcall(FILL, key, token, value, self._options.ttl_s)
        except FAULTS as exc:
            self._path.fault(exc, FILL)
            self._release(key, token)  # a full noeviction Redis: let the next reader try
            return True
        counters.add("fills" if written else "refused_fills")
        return bool(written)

    def _release(self, key: str, token: bytes) -> None:
        with contextlib.suppress(*FAULTS):  # else the lease runs out by itself after lease_ms
            self._fcall(RELEASE, key, token)

    def _delete(self, key: str) -> bool:
        try:
            self._client().unlink(key)
            return True
        except FAULTS as exc:
            self._path.fault(exc, "UNLINK")
            return False

    def _load(self, query: PrimerQuery, loader: Loader) -> Response:
        started = time.perf_counter()
        try:
            return loader(query)
        finally:
            self._path.counters.loader(time.perf_counter() - started)

    def _after_fork(self) -> None:
        self._flights = {}
        self._flights_lock = threading.Lock()
        self._redis_lock = threading.Lock()

    # ---- the rest ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return self._path.stats()

    def latency(self) -> tuple[list[int], float]:
        return self._path.latency()

    @property
    def options(self) -> Options:
        return self._options

    @property
    def tracking(self) -> Any:
        """The tracker (tests and health checks: `established`, `connection_ids()`)."""
        return self._path.tracker

    def close(self) -> None:
        self._path.close()
        if self._redis is not None:
            self._redis.close()

    def __enter__(self) -> PrimerCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
