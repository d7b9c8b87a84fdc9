"""One frozen settings object, built once from the environment and the optional TOML file.

Every bad value is collected and reported together in one ConfigError, each naming the
setting as its source spells it (the variable, or the file's `section.key`). The groups and
their defaults: config.groups; the file: config.toml_file; the environment: config.environment.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Re-exported: the key format's defaults and the lease keys' prefix, as the primer server's
# client library (the wire contract's one owner) defines them.
from primer_cache_client.keys import (  # noqa: F401
    DEFAULT_KEY_PREFIX,
    DEFAULT_KEY_TEMPLATE,
    KEY_FIELDS,
    LEASE_PREFIX,
)

from config.environment import (
    read_broker_url,
    read_process_settings,
    read_redis_url,
    read_sources,
    refuse_empty,
)
from config.errors import ConfigError
from config.groups import (
    TOML_GROUPS,
    CacheSettings,
    CelerySettings,
    CheckSettings,
    ListenerSettings,
    MetricsSettings,
    PartitionSettings,
    RefreshSettings,
    StatusSettings,
    TablesSettings,
    WarmSettings,
)
from config.mysql import MySQLSettings
from config.replicas import ReplicaSettings, parse_replicas
from config.secrets import redact_url
from config.sentinel import is_sentinel_url
from config.toml_file import read_toml

# Where a listener's own server_id is drawn from when none is set (above the small ids
# servers and hand-configured replicas use).
SERVER_ID_RANGE = (1 << 20, (1 << 32) - 1)

# Every group load_settings builds from the file's and the environment's values.
GROUPS: dict[str, type] = {**TOML_GROUPS, "metrics": MetricsSettings}


@dataclass(frozen=True)
class Settings:
    """Everything configurable, one group per concern named for its TOML section
    (config.groups): the file's `listener.max_in_flight` is `settings.listener.max_in_flight`."""

    mysql: MySQLSettings  # the primer database (the first of mysql_sources, if several)
    cache: CacheSettings = field(default_factory=CacheSettings)
    celery: CelerySettings = field(default_factory=CelerySettings)
    tables: TablesSettings = field(default_factory=TablesSettings)
    warm: WarmSettings = field(default_factory=WarmSettings)
    refresh: RefreshSettings = field(default_factory=RefreshSettings)
    listener: ListenerSettings = field(default_factory=ListenerSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    status: StatusSettings = field(default_factory=StatusSettings)
    check: CheckSettings = field(default_factory=CheckSettings)
    partitions: PartitionSettings = field(default_factory=PartitionSettings)
    replicas: ReplicaSettings = field(default_factory=ReplicaSettings)
    # The listener's binlog sources in order (PRIMER_MYSQL_URL with several URLs): the primary
    # first, then the replicas that may be promoted in its place. Empty: `mysql` alone.
    mysql_sources: tuple[MySQLSettings, ...] = ()

    @property
    def sources(self) -> tuple[MySQLSettings, ...]:
        return self.mysql_sources or (self.mysql,)

    def __repr__(self) -> str:
        return (
            f"Settings(mysql={self.mysql!r}, redis={redact_url(self.cache.url)!r}, "
            f"broker={redact_url(self.celery.broker_url)!r}, prefix={self.cache.key_prefix!r})"
        )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from `env` (default os.environ); raise ConfigError naming every problem."""
    env = os.environ if env is None else env
    problems: list[str] = []
    refuse_empty(env, problems)
    sources = read_sources(env, problems)
    redis_url = read_redis_url(env, problems)
    broker_url = read_broker_url(env, redis_url, problems)
    path = env.get("PRIMER_CONFIG")
    values = read_toml(path, problems) if path and path.strip() else {}
    primary = sources[0] if sources else None
    replicas = parse_replicas(env, values.pop("replicas", None), primary, problems)
    _check_replica_wait(replicas, values.get("listener", {}), problems)
    read_process_settings(env, values, problems)
    if problems or primary is None:
        raise ConfigError(problems)
    values.setdefault("cache", {})["url"] = redis_url
    values.setdefault("celery", {})["broker_url"] = broker_url
    if is_sentinel_url(redis_url):
        values["cache"].setdefault("wait_replicas", 1)
    listener = values.setdefault("listener", {})
    listener["server_id"] = listener.get("server_id") or _default_server_id()
    return Settings(
        mysql=primary,
        mysql_sources=sources if len(sources) > 1 else (),
        replicas=replicas,
        **{name: group(**values.get(name, {})) for name, group in GROUPS.items()},
    )


def _check_replica_wait(
    replicas: ReplicaSettings, listener: Mapping[str, Any], problems: list[str]
) -> None:
    redeliver = listener.get("redeliver_after_s", ListenerSettings.redeliver_after_s)
    if replicas and isinstance(redeliver, int) and replicas.max_wait_s >= redeliver:
        # The first pass reports no progress while it waits: the listener would publish
        # the batch again mid-wait.
        problems.append(
            f"replicas.max_wait_s = {replicas.max_wait_s:g} must be below "
            f"listener.redeliver_after_s = {redeliver}"
        )


def _default_server_id() -> int:
    # A random id per process: replicas of one deployment (identical settings, one host or
    # many) must not share one (two binlog streams with one server_id fail with error 4052).
    # Only a leader streams, so two ids meet only during a takeover: a collision among n
    # replicas is about n^2 / 2^33 likely (docs/takeover.md).
    return random.randint(SERVER_ID_RANGE[0], SERVER_ID_RANGE[1])
