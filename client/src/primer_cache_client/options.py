"""The client's settings, and how it reaches Redis (standalone or cluster, from one URL)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from primer_cache_client.keys import DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE, KeyFormat

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def url_from_env() -> str:
    """PRIMER_REDIS_URL (the sidecar's), else REDIS_URL (the primer server's compose file)."""
    return os.environ.get("PRIMER_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL


@dataclass(frozen=True)
class Options:
    url: str = DEFAULT_URL
    prefix: str = DEFAULT_KEY_PREFIX
    key_template: str = DEFAULT_KEY_TEMPLATE
    l1: bool = True
    l1_size: int = 1000
    l1_ttl_s: float = 300.0
    ttl_s: int = 3600
    compression: bool = True
    lease_ms: int = 5000  # above the primer query's slowest time: a later fill is refused
    busy_wait_s: float = 0.1  # how long a `busy` read polls before serving the loader
    busy_poll_s: float = 0.005
    timeout_s: float = 0.25  # every Redis command and connect; then the loader answers
    fault_backoff_s: float = 1.0  # after a connection fault, skip Redis this long
    ping_interval_s: float = 1.0  # an idle tracking connection is checked this often
    cluster: bool | None = None  # None: ask the server (INFO cluster)
    metrics: bool = True  # export through prometheus-client when it is installed

    def __post_init__(self) -> None:
        for name in ("l1_size", "ttl_s", "lease_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("l1_ttl_s", "busy_wait_s", "busy_poll_s", "timeout_s", "fault_backoff_s",
                     "ping_interval_s"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        if "{" in self.prefix:
            raise ValueError(f"prefix: {self.prefix!r} holds '{{'")
        KeyFormat(self.prefix, self.key_template)  # a bad template fails here, not per read

    @classmethod
    def build(cls, url: str, options: dict[str, Any]) -> Options:
        """From a cache's keyword arguments; ValueError naming an unknown one."""
        known = set(cls.__dataclass_fields__) - {"url"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown option (known: {', '.join(sorted(known))})")
        return cls(url=url, **options)

    def connection_kwargs(self) -> dict[str, Any]:
        """Bounded, no retries: a fault goes to the loader at once, not after a backoff."""
        return {
            "socket_timeout": self.timeout_s,
            "socket_connect_timeout": self.timeout_s,
            "retry": Retry(NoBackoff(), 0),
        }


def is_cluster(url: str, options: Options) -> bool:
    """Whether the Redis at `url` is a cluster node: CLUSTER MYID answers on a cluster and
    fails with "cluster support disabled" on a single node (INFO cluster when not allowed)."""
    if options.cluster is not None:
        return options.cluster
    probe = redis.Redis.from_url(url, **options.connection_kwargs())
    try:
        try:
            probe.execute_command("CLUSTER", "MYID")
        except redis.exceptions.NoPermissionError:
            pass
        except redis.ResponseError:  # "cluster support disabled"
            return False
        else:
            return True
        try:
            return bool(probe.info("cluster").get("cluster_enabled"))
        except redis.exceptions.NoPermissionError:
            # Guessing would be wrong one way or the other (a cluster read as one node fails
            # every read with MOVED): say what to do, once per fault kind.
            raise redis.exceptions.NoPermissionError(
                "cannot tell whether this Redis is a cluster: grant the ACL user "
                "+cluster|myid, or pass cluster=True or cluster=False"
            ) from None
    finally:
        probe.close()


def sync_client(options: Options, cluster: bool) -> redis.Redis:
    kwargs = options.connection_kwargs()
    if cluster:
        return RedisCluster.from_url(options.url, **kwargs)  # type: ignore[return-value]
    return redis.Redis.from_url(options.url, **kwargs)
