"""One frozen settings object, built once from the environment and the optional TOML file.

Every bad value is collected and reported together in one ConfigError, each naming the
setting as its source spells it (the variable, or the file's `section.key`). The groups and
their defaults: config.groups; the file: config.toml_file; the environment: config.environment.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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


class _Flat:
    """Temporary: the flat name a setting had before the groups, read through to its group,
    so that code not yet renamed keeps working (removed by the rename commit)."""

    def __init__(self, group: str, name: str) -> None:
        self.group, self.name = group, name

    def __get__(self, obj: Any, owner: Any) -> Any:
        if obj is None:  # Settings.<name>: the default, as the flat dataclass had it
            return getattr(GROUPS[self.group], self.name)
        return getattr(getattr(obj, self.group), self.name)


@dataclass(frozen=True)
class Settings:
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

    # Temporary (see _Flat): old flat name = its group and field.
    redis_url = _Flat("cache", "url")
    broker_url = _Flat("celery", "broker_url")
    key_prefix = _Flat("cache", "key_prefix")
    key_template = _Flat("cache", "key_template")
    state_prefix = _Flat("cache", "state_prefix")
    ttl_seconds = _Flat("cache", "ttl_seconds")
    compression = _Flat("cache", "compression")
    ignored_columns = _Flat("cache", "ignored_columns")
    second_pass_ms = _Flat("cache", "second_pass_ms")
    wait_replicas = _Flat("cache", "wait_replicas")
    wait_timeout_ms = _Flat("cache", "wait_timeout_ms")
    warm_patterns = _Flat("warm", "patterns")
    warm_refresh_seconds = _Flat("warm", "refresh_seconds")
    refresh_max_keys = _Flat("refresh", "max_keys")
    refresh_idle_seconds = _Flat("refresh", "idle_seconds")
    refresh_min_freq = _Flat("refresh", "min_freq")
    chunks_table = _Flat("tables", "chunks")
    elements_table = _Flat("tables", "global_elements")
    server_id = _Flat("listener", "server_id")
    batch_max_changes = _Flat("listener", "batch_max_changes")
    batch_max_wait_ms = _Flat("listener", "batch_max_wait_ms")
    leader_ttl_ms = _Flat("listener", "leader_ttl_ms")
    max_in_flight = _Flat("listener", "max_in_flight")
    redeliver_after_s = _Flat("listener", "redeliver_after_s")
    fast_lane_max_keys = _Flat("listener", "fast_lane_max_keys")
    metrics_port = _Flat("listener", "metrics_port")
    worker_metrics_port = _Flat("metrics", "worker_port")
    metrics_addr = _Flat("metrics", "addr")
    max_lag_s = _Flat("status", "max_lag_s")
    check_sample = _Flat("check", "sample")
    check_every_s = _Flat("check", "every_s")
    queue_prefix = _Flat("celery", "queue_prefix")

    @property
    def sources(self) -> tuple[MySQLSettings, ...]:
        return self.mysql_sources or (self.mysql,)

    def __repr__(self) -> str:
        return (
            f"Settings(mysql={self.mysql!r}, redis={redact_url(self.cache.url)!r}, "
            f"broker={redact_url(self.celery.broker_url)!r}, prefix={self.cache.key_prefix!r})"
        )


_FLAT_NAMES = {name: value for name, value in vars(Settings).items() if isinstance(value, _Flat)}
_generated_init = Settings.__init__


def _init_with_flat_names(self: Settings, *args: Any, **kwargs: Any) -> None:
    """Temporary: Settings(...) and dataclasses.replace(settings, ...) with old flat names."""
    flat = {name: kwargs.pop(name) for name in list(kwargs) if name in _FLAT_NAMES}
    _generated_init(self, *args, **kwargs)
    for name, value in flat.items():
        where = _FLAT_NAMES[name]
        group = replace(getattr(self, where.group), **{where.name: value})
        object.__setattr__(self, where.group, group)


setattr(Settings, "__init__", _init_with_flat_names)  # noqa: B010


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
