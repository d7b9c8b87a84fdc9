"""AsyncPrimerCache: the primer server's read for asyncio servers (aiohttp), over redis.asyncio.

The same read as cache.PrimerCache: L1, primer_cache_read, the loader under the lease, the fill
behind. Single flight is per key among the tasks of this process. The L1 and its tracking are
the shared ones (l1.py, tracking.py): the tracking connections are read by a thread, so an
invalidation lands even while the event loop is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from primer_cache_client import stats as stats_mod
from primer_cache_client.functions import FILL, READ, RELEASE, Answer, parse_answer
from primer_cache_client.l1 import Ticket
from primer_cache_client.options import Options, url_from_env
from primer_cache_client.query import PrimerQuery
from primer_cache_client.readpath import FAULTS, ReadPath
from primer_cache_client.values import decode, encode

Response = dict[str, Any]
AsyncLoader = Callable[[PrimerQuery], Awaitable[Response] | Response]


class _Flight:
    """One read in progress, which other tasks missing the same key may wait for."""

    __slots__ = ("future", "joinable", "shareable", "ticket")

    def __init__(self, future: asyncio.Future[Response]) -> None:
        self.future = future
        self.ticket: Ticket | None = None  # the L1 ticket of its read
        self.shareable = True  # False: its answer is its reader's alone (see _fill)
        self.joinable = True  # False: it loads without a lease (see _joinable)


class AsyncPrimerCache:
    """The primer read path for asyncio servers. Responses are shared with the L1: treat them
    as read-only."""

    def __init__(self, url: str | None = None, **options: Any) -> None:
        self._options = Options.build(url or url_from_env(), options)
        self._path = ReadPath(self._options)
        self._l1 = self._path.l1 if self._options.l1 else None
        self._l1_get = self._l1.get if self._l1 is not None else None
        self._key_memo = (self._options.prefix, self._options.key_template)
        self._redis: Any = None
        self._redis_lock = asyncio.Lock()
        self._flights: dict[str, _Flight] = {}
        self._path.on_fork(self._after_fork)
        self._path.start_tracking()
        if self._options.metrics:
            stats_mod.export(self)

    @classmethod
    def from_env(cls, **options: Any) -> AsyncPrimerCache:
        return cls(url_from_env(), **options)

    async def get(self, query: PrimerQuery, loader: AsyncLoader) -> Response:
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
            flight = self._joinable(key)
            while flight is not None:
                self._path.counters.add("single_flight_waits")
                try:
                    result = await asyncio.shield(flight.future)
                    if flight.shareable:
                        return result
                    # its rows changed while it loaded them: read again, after the change
                except asyncio.CancelledError:
                    # The first reader was cancelled, not this one: read in its place.
                    task = asyncio.current_task()
                    cancelled_here = task is not None and task.cancelling()
                    if not flight.future.cancelled() or cancelled_here:
                        raise
                flight = self._joinable(key)
            flight = _Flight(asyncio.get_running_loop().create_future())
            self._flights[key] = flight
            flight.ticket = self._l1.begin(key) if self._l1 is not None else None
            try:
                result = await self._read_through(key, query, loader, flight)
            except asyncio.CancelledError:
                flight.future.cancel()
                raise
            except BaseException as exc:
                flight.future.set_exception(exc)
                flight.future.exception()  # retrieved: no warning when nobody waited
                raise
            else:
                flight.future.set_result(result)
                return result
            finally:
                if self._flights.get(key) is flight:
                    del self._flights[key]
        finally:
            self._path.counters.latency(time.perf_counter() - started)

    def _joinable(self, key: str) -> _Flight | None:
        """The read in progress for `key`, unless it loads without a lease, or an
        invalidation of the key has arrived since it began (its answer may predate a change
        this request began after)."""
        flight = self._flights.get(key)
        if flight is None or not flight.joinable:
            return None
        if self._l1 is None or self._l1.unchanged(key, flight.ticket):
            return flight
        return None

    async def _read_through(
        self, key: str, query: PrimerQuery, loader: AsyncLoader, flight: _Flight
    ) -> Response:
        ticket = flight.ticket
        path, options, counters = self._path, self._options, self._path.counters
        l1 = self._l1
        if path.redis_skipped():
            counters.add("cache_faults")
            if l1 is not None:
                l1.finish(key, ticket, None)
            return await self._load(query, loader)
        keep: Response | None = None
        try:
            deadline: float | None = None
            undecodable_seen = False
            while True:
                try:
                    answer = await self._fcall_read(key)
                except FAULTS as exc:
                    path.fault(exc, READ)
                    return await self._load(query, loader)
                if answer.kind == "hit":
                    try:
                        keep = decode(answer.payload)
                    except ValueError as exc:
                        counters.add("undecodable_values")
                        path.fault(exc, "decode")
                        if undecodable_seen or not await self._delete(key):
                            return await self._load(query, loader)
                        undecodable_seen = True
                        continue
                    counters.add("redis_hits")
                    return keep
                if answer.kind == "lease":
                    counters.add("redis_misses")
                    response = await self._load(query, loader)
                    if not await self._fill(key, answer.payload, response):
                        flight.shareable = False  # waiters may have come after the change
                    return response
                now = time.monotonic()
                if deadline is None:
                    counters.add("busy_waits")
                    counters.add("redis_misses")
                    deadline = now + options.busy_wait_s
                left = deadline - now
                if left <= 0 or answer.ms_left == 0:
                    counters.add("busy_timeouts")
                    flight.joinable = False  # a load without a lease: no later request joins
                    return await self._load(query, loader)
                await asyncio.sleep(min(options.busy_poll_s, left, answer.ms_left / 1000))
        finally:
            if l1 is not None:
                l1.finish(key, ticket, keep)

    async def _client(self) -> Any:
        if self._redis is None:
            async with self._redis_lock:
                if self._redis is None:
                    cluster = await asyncio.to_thread(self._path.cluster)
                    kwargs = self._options.connection_kwargs()
                    kwargs["retry"] = AsyncRetry(NoBackoff(), 0)
                    if cluster:
                        self._redis = AsyncRedisCluster.from_url(self._options.url, **kwargs)
                    else:
                        self._redis = aredis.Redis.from_url(self._options.url, **kwargs)
        return self._redis

    async def _fcall(self, name: str, key: str, *args: Any) -> Any:
        client = await self._client()
        try:
            return await client.fcall(name, 1, key, *args)
        except redis.ResponseError as exc:
            if not self._path.function_missing(exc):
                raise
            try:
                await client.function_load(self._path.library, replace=True)
            except redis.ResponseError as load_exc:
                if "already exists" not in str(load_exc):
                    raise
            return await client.fcall(name, 1, key, *args)

    async def _fcall_read(self, key: str) -> Answer:
        return parse_answer(await self._fcall(READ, key, self._options.lease_ms))

    async def _fill(self, key: str, token: bytes, response: Response) -> bool:
        """Fill under the lease; False when refused (the rows changed while loading)."""
        try:
            value = encode(response, compression=self._options.compression)
        except (TypeError, ValueError) as exc:
            self._path.fault(exc, "encode")
            await self._release(key, token)
            return True
        try:
            written = await self._fcall(FILL, key, token, value, self._options.ttl_s)
        except FAULTS as exc:
            self._path.fault(exc, FILL)
            await self._release(key, token)
            return True
        self._path.counters.add("fills" if written else "refused_fills")
        return bool(written)

    async def _release(self, key: str, token: bytes) -> None:
        with contextlib.suppress(*FAULTS):  # else the lease runs out by itself after lease_ms
            await self._fcall(RELEASE, key, token)

    async def _delete(self, key: str) -> bool:
        try:
            await (await self._client()).unlink(key)
            return True
        except FAULTS as exc:
            self._path.fault(exc, "UNLINK")
            return False

    async def _load(self, query: PrimerQuery, loader: AsyncLoader) -> Response:
        started = time.perf_counter()
        try:
            result = loader(query)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            self._path.counters.loader(time.perf_counter() - started)

    def _after_fork(self) -> None:
        """In a forked child: the parent's connections and futures are not this process's."""
        self._flights = {}
        self._redis = None
        self._redis_lock = asyncio.Lock()

    def stats(self) -> dict[str, Any]:
        return self._path.stats()

    def latency(self) -> tuple[list[int], float]:
        return self._path.latency()

    @property
    def options(self) -> Options:
        return self._options

    @property
    def tracking(self) -> Any:
        return self._path.tracker

    async def aclose(self) -> None:
        await asyncio.to_thread(self._path.close)
        if self._redis is not None:
            await self._redis.aclose()

    async def __aenter__(self) -> AsyncPrimerCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
