"""The one way every process reaches a Redis: the cache (listener, tasks, CLI) and a Redis broker.

A Redis Cluster is recognised from the server itself (`INFO cluster` says cluster_enabled:1),
so one URL setting serves a single node and a cluster alike, and the cluster gets redis-py's
RedisCluster (slot routing, MOVED/ASK handling). TLS is `rediss://` with redis-py's options in
the URL query (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs`); an ACL user is
the URL's `user:password@`. URLs are shown only through `redact_url`, so a password never
reaches a log line, a status page or an error.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from adapters.unreachable import ServerUnreachable
from config.secrets import redact_url
from config.sentinel import is_sentinel_url, parse_sentinel_url

log = logging.getLogger(__name__)


class RedisConnectError(ServerUnreachable, redis.ConnectionError):
    """Raised when a Redis named by a URL cannot be reached or identified; the message names the
    URL without its password. A redis.ConnectionError still, so retries that wait for a Redis
    to come back treat it as one."""


def connect_redis(url: str, **options: Any) -> redis.Redis:
    """A client for the Redis at `url`: RedisCluster when the server is a cluster node.

    `options` are redis-py connection arguments (timeouts and the like). The cluster client is
    typed as redis.Redis: it speaks the same commands, routed by slot, and callers that must
    treat a cluster differently ask `is_cluster`.
    """
    if is_sentinel_url(url):
        return _sentinel_primary(url, options)
    probe = redis.Redis.from_url(url, **options)
    try:
        clustered = _cluster_enabled(probe)
    except redis.AuthenticationError as exc:
        raise RedisConnectError(f"Redis {redact_url(url)} refused the credentials: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisConnectError(f"Redis {redact_url(url)}: {' '.join(str(exc).split())}") from None
    finally:
        probe.close()
    if not clustered:
        return redis.Redis.from_url(url, **options)
    log.info("Redis %s is a cluster: using the cluster client", redact_url(url))
    return cast(redis.Redis, RedisCluster.from_url(url, **options))


def _sentinel_primary(url: str, options: dict[str, Any]) -> redis.Redis:
    problems: list[str] = []
    parsed = parse_sentinel_url(url, "Redis URL", problems)
    if parsed is None:
        raise RedisConnectError("; ".join(problems))
    sentinel_kwargs: dict[str, Any] = {
        name: options[name]
        for name in ("socket_timeout", "socket_connect_timeout")
        if name in options
    }
    if parsed.sentinel_password is not None:
        sentinel_kwargs["password"] = parsed.sentinel_password
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(
        parsed.service,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **options,
    )


def is_cluster(client: redis.Redis) -> bool:
    return isinstance(client, RedisCluster)


def _cluster_enabled(client: redis.Redis) -> bool:
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.exceptions.NoPermissionError:
        # An ACL without INFO: ask the cluster itself; a standalone server refuses CLUSTER.
        try:
            client.execute_command("CLUSTER", "MYID")
        except redis.ResponseError:
            return False
        return True
