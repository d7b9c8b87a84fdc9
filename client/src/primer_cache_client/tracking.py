"""Server-assisted client-side caching for the L1, on Redis 7.0 (redis-py's own needs 7.4).

One dedicated RESP3 connection per primary, `CLIENT TRACKING ON BCAST PREFIX <prefix>`: Redis
pushes `invalidate [keys]` for every change of a key under the prefix (a null list for a
FLUSHALL). Each connection has a thread blocked reading it; pushes go to the L1 at once
(l1.L1 orders them against reads in flight with tickets). The thread PINGs an idle connection
(ROLE on a cluster node, which also catches a primary demoted by a failover) every
`ping_interval_s` and treats a silent or slow server like a dropped one.

Any channel down (killed, Redis restarted, timeout) -> the L1 is emptied and bypassed; when
every channel is back, it is trusted again. On a cluster a change of the set of primaries
restarts every channel.

The push handler is redis-py's private hook `connection._parser.set_invalidation_push_handler`
(what redis-py's own client-side cache uses); its absence is a clear error at start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from primer_cache_client.l1 import L1

log = logging.getLogger(__name__)

# A function that lists the primaries as (name, connection factory) pairs, or raises.
NodeLister = Callable[[], list[tuple[str, Callable[[], redis.Connection]]]]


def connection_factory(pool: redis.ConnectionPool) -> Callable[[], redis.Connection]:
    """A RESP3 connection like `pool`'s (same host, TLS, credentials), without retries."""
    kwargs = {
        **pool.connection_kwargs,
        "protocol": 3,
        "retry": Retry(NoBackoff(), 0),
    }
    kwargs.pop("cache", None)
    kwargs.pop("cache_config", None)
    connection_class = pool.connection_class

    def make() -> redis.Connection:
        return connection_class(**kwargs)

    return make


class Tracker:
    """Keeps the L1 trusted exactly while every primary's tracking channel is established."""

    def __init__(
        self,
        l1: L1,
        prefix: str,
        list_nodes: NodeLister,
        *,
        cluster: Callable[[], bool],
        ping_interval_s: float = 1.0,
        retry_interval_s: float = 0.5,
    ) -> None:
        self._l1 = l1
        self._prefix = prefix
        self._list_nodes = list_nodes
        self._cluster = cluster
        self._ping_interval_s = ping_interval_s
        self._retry_interval_s = retry_interval_s
        self._stop = threading.Event()
        self._restart = threading.Event()
        self._lock = threading.Lock()
        self._up: set[str] = set()
        self._expected: set[str] = set()
        self._connections: dict[str, redis.Connection] = {}
        self.drops = 0  # times tracking was lost after being established
        self.invalidation_messages = 0
        self._thread = threading.Thread(
            target=self._supervise, name="primer-cache-tracking", daemon=True
        )
        self._thread.start()

    # ---- state ---------------------------------------------------------------------------
    @property
    def established(self) -> bool:
        return self._l1.trusted

    def wait_established(self, timeout_s: float) -> bool:
        """For tests and start-up: wait until tracking is established (no sleep-and-hope)."""
        deadline = time.monotonic() + timeout_s
        while not self._l1.trusted and time.monotonic() < deadline:
            self._stop.wait(0.005)
        return self._l1.trusted

    def connection_ids(self) -> list[int]:
        """The server-side CLIENT ID of each tracking connection (tests kill them)."""
        with self._lock:
            conns = list(self._connections.values())
        ids = []
        for conn in conns:
            ident = getattr(conn, "_primer_client_id", None)
            if ident is not None:
                ids.append(ident)
        return ids

    def close(self) -> None:
        self._stop.set()
        self._restart.set()
        with self._lock:
            conns = list(self._connections.values())
        for conn in conns:
            conn.disconnect()
        self._thread.join(timeout=5)
        self._l1.distrust()

    def _channel_up(self, name: str) -> None:
        with self._lock:
            self._up.add(name)
            complete = self._up == self._expected
        if complete:
            self._l1.trust()

    def _channel_down(self, name: str) -> None:
        with self._lock:
            was_trusted = self._l1.trusted
            self._up.discard(name)
        self._l1.distrust()
        if was_trusted and not self._stop.is_set():
            self.drops += 1
            log.warning("primer cache: invalidation channel to %s lost; L1 bypassed", name)

    def _on_push(self, message: Any) -> None:
        self.invalidation_messages += 1
        keys = message[1] if len(message) > 1 else None
        if keys is None:
            self._l1.flush()
            return
        self._l1.invalidate(
            k.decode("utf-8", "surrogateescape") if isinstance(k, bytes) else str(k) for k in keys
        )

    # ---- threads -------------------------------------------------------------------------
    def _supervise(self) -> None:
        """Start a channel thread per primary; restart all when the primaries change."""
        unreachable = False
        while not self._stop.is_set():
            try:
                nodes = self._list_nodes()
            except (redis.RedisError, OSError) as exc:
                if not unreachable:  # one line per outage, not one per retry
                    log.warning("primer cache: cannot reach Redis to track: %s", exc)
                unreachable = True
                self._stop.wait(self._retry_interval_s)
                continue
            unreachable = False
            self._restart.clear()
            with self._lock:
                self._expected = {name for name, _ in nodes}
                self._up.clear()
            self._l1.distrust()
            threads = [
                threading.Thread(
                    target=self._channel,
                    args=(name, make),
                    name=f"primer-cache-{name}",
                    daemon=True,
                )
                for name, make in nodes
            ]
            for thread in threads:
                thread.start()
            while not self._restart.wait(self._ping_interval_s):
                if self._cluster() and self._topology_changed():
                    log.warning("primer cache: cluster primaries changed; tracking restarts")
                    self._restart.set()
            self._l1.distrust()
            with self._lock:
                conns = list(self._connections.values())
            for conn in conns:
                conn.disconnect()
            for thread in threads:
                thread.join(timeout=5)

    def _topology_changed(self) -> bool:
        try:
            names = {name for name, _ in self._list_nodes()}
        except (redis.RedisError, OSError):
            return True
        with self._lock:
            return names != self._expected

    def _channel(self, name: str, make: Callable[[], redis.Connection]) -> None:
        while not self._stop.is_set() and not self._restart.is_set():
            conn = make()
            with self._lock:
                self._connections[name] = conn
            try:
                self._track(name, conn)
            except (redis.RedisError, OSError, ValueError) as exc:
                if not self._stop.is_set() and not self._restart.is_set():
                    log.info("primer cache: tracking channel to %s: %s", name, exc)
            except RuntimeError as exc:  # no push hook in this redis-py: the L1 stays off
                log.error("primer cache: %s; the L1 is not used", exc)
                return
            finally:
                self._channel_down(name)
                conn.disconnect()
                with self._lock:
                    if self._connections.get(name) is conn:
                        del self._connections[name]
            self._restart.wait(self._retry_interval_s)

    def _track(self, name: str, conn: redis.Connection) -> None:
        conn.connect()
        parser = conn._parser
        set_handler = getattr(parser, "set_invalidation_push_handler", None)
        if set_handler is None:
            raise RuntimeError(
                "this redis-py has no RESP3 invalidation push hook: install redis>=5.1"
            )
        set_handler(self._on_push)
        conn.send_command("CLIENT", "ID")
        conn._primer_client_id = int(conn.read_response())  # type: ignore[attr-defined]
        # An empty prefix (keys without one) tracks every key.
        prefix = ("PREFIX", self._prefix) if self._prefix else ()
        conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", *prefix)
        reply = conn.read_response()
        if reply not in (b"OK", "OK"):
            raise redis.ResponseError(f"CLIENT TRACKING answered {reply!r}")
        if self._cluster():
            self._check_primary(conn)
        self._channel_up(name)
        while not self._stop.is_set() and not self._restart.is_set():
            if conn.can_read(timeout=self._ping_interval_s):
                conn.read_response(push_request=True)
                continue
            # Idle: prove the server still answers (and on a cluster, still is a primary).
            if self._cluster():
                self._check_primary(conn)
            else:
                conn.send_command("PING")
                conn.read_response()

    @staticmethod
    def _check_primary(conn: redis.Connection) -> None:
        conn.send_command("ROLE")
        role = conn.read_response()
        kind = role[0] if isinstance(role, list | tuple) and role else role
        if kind not in (b"master", "master"):
            raise redis.ResponseError(f"node is no longer a primary (ROLE {kind!r})")
