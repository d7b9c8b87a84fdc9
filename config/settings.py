"""One frozen settings object, built once from the environment and the optional TOML file.

Every bad value is collected and reported together in one ConfigError.
"""

from __future__ import annotations

import os
import random
import socket
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

# The key format's defaults and the lease keys' prefix (fixed: the function library is one per
# Redis server) belong to the primer server's client library, the wire contract's one owner.
from primer_cache_client.keys import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_KEY_TEMPLATE,
    KEY_FIELDS,
    LEASE_PREFIX,
)

from config.errors import ConfigError
from config.mysql import MySQLSettings, parse_sources
from config.query import SEED_WARM_PATTERNS, Query
from config.replicas import REPLICA_KEYS, ReplicaSettings, parse_replicas
from config.secrets import redact_url
from config.sentinel import is_sentinel_url, parse_sentinel_url

# Where a listener's own server_id is drawn from when none is set (above the small ids
# servers and hand-configured replicas use).
SERVER_ID_RANGE = (1 << 20, (1 << 32) - 1)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# A namespace of our own (namespace_problem): ends in one of these, after this many characters.
SEPARATORS = (":", "/", "|")
NAMESPACE_MIN = 3
MAX_REDIS_DB = 15  # Redis's default `databases 16`; a Redis Cluster has database 0 only


@dataclass(frozen=True)
class PartitionSettings:
    table: str = "megamind_global_element_analytics_partitioned"
    months_ahead: int = 3
    retain_months: int | None = None
    schedule_hour: int = 3  # UTC hour of the daily beat run
    lock_wait_timeout: int = 5
    attempts: int = 5
    # Retention may drop partitions holding rows, or more than a few at once (tasks.partitions)
    allow_drop_rows: bool = False


@dataclass(frozen=True)
class Settings:
    mysql: MySQLSettings
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = "redis://127.0.0.1:6379/1"
    key_prefix: str = DEFAULT_KEY_PREFIX
    key_template: str = DEFAULT_KEY_TEMPLATE
    # The sidecar's own keys (checkpoint, leader lock, warm locks, stats). Must lie outside
    # the primer keys' SCAN pattern, or a sweep would delete them.
    state_prefix: str = "primer-cache:"
    ttl_seconds: int = 3600
    compression: bool = True
    warm_patterns: tuple[Query, ...] = SEED_WARM_PATTERNS
    warm_refresh_seconds: int = 2700  # beat re-warms before the TTL runs out
    ignored_columns: frozenset[str] = frozenset({"access_count", "last_accessed", "updated_at"})
    second_pass_ms: int = 250
    # Before a batch is reported done, WAIT until this many replicas of the cache Redis have
    # its deletes (each primary's, on a cluster): a failover to a replica then cannot bring
    # a deleted key back. Default: 1 with a redis+sentinel:// cache URL, else 0 (off).
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    # Refresh, not miss: after a sweep, recompute up to refresh_max_keys of the deleted keys
    # that were read within refresh_idle_seconds (OBJECT FREQ >= refresh_min_freq under an
    # LFU policy). 0 turns it off.
    refresh_max_keys: int = 100
    refresh_idle_seconds: int = 60
    refresh_min_freq: int = 6  # LFU counters start at 5: above it means read since written
    chunks_table: str = "megamind_chunks"
    elements_table: str = "megamind_global_elements"
    server_id: int = 0
    batch_max_changes: int = 5000
    batch_max_wait_ms: int = 20
    leader_ttl_ms: int = 1_000  # a dead leader's standby takes over within about this long
    max_in_flight: int = 2  # published batches not yet done; 0 = no backpressure
    redeliver_after_s: int = 30  # a batch with no progress this long is published again
    # The listener's fast lane (worker.fast_lane) knows at most this many key names (a larger
    # keyspace: none, the sweeps alone); 0 turns it off.
    fast_lane_max_keys: int = 200_000
    metrics_port: int = 0  # the listener serves /metrics and /healthz on <port>; 0 = off
    worker_metrics_port: int = 0  # the Celery worker's main process does; 0 = off
    metrics_addr: str = "127.0.0.1"  # the address both bind (0.0.0.0 for Kubernetes probes)
    max_lag_s: int = 60  # unhealthy above this binlog lag (status, the listener's /healthz)
    check_sample: int = 0  # beat checks this many random cached keys per run; 0 = off
    check_every_s: int = 300  # how often beat runs that check
    # Celery queues are named <queue_prefix>.invalidate/.warm/.maintenance; sidecars (or test
    # runs) sharing one broker keep apart by using different prefixes.
    queue_prefix: str = "primer"
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
            f"Settings(mysql={self.mysql!r}, redis={redact_url(self.redis_url)!r}, "
            f"broker={redact_url(self.broker_url)!r}, prefix={self.key_prefix!r})"
        )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from `env` (default os.environ); raise ConfigError naming every problem."""
    env = os.environ if env is None else env
    problems: list[str] = []

    # A variable set to the empty string is a mistake (a template that did not expand), not a
    # wish for the default: the default would be another server, silently.
    for name in ("PRIMER_MYSQL_URL", "PRIMER_REDIS_URL", "PRIMER_BROKER_URL", "PRIMER_CONFIG"):
        if name in env and not env[name].strip():
            problems.append(f"{name} is set but empty: give a value, or unset it")

    url = env.get("PRIMER_MYSQL_URL")
    sources: tuple[MySQLSettings, ...] = ()
    if url is not None:
        sources = parse_sources(url, problems) if url.strip() else ()
        mysql = sources[0] if sources else None
    else:
        mysql = MySQLSettings.from_megamind_env(env, problems)

    redis_url = env.get("PRIMER_REDIS_URL", DEFAULT_REDIS_URL)
    _check_redis_url("PRIMER_REDIS_URL", redis_url, problems)
    broker_url = env.get("PRIMER_BROKER_URL")
    if broker_url is None:
        broker_url = _next_db(redis_url)
        if _redis_db(broker_url) > MAX_REDIS_DB:
            problems.append(
                f"the default broker is the cache Redis's next database, "
                f"{redact_url(broker_url)!r}, which Redis does not have (databases "
                f"0..{MAX_REDIS_DB}): set PRIMER_BROKER_URL"
            )
    else:
        _check_broker_url(broker_url, problems)

    values: dict[str, Any] = {}
    path = env.get("PRIMER_CONFIG")
    if path and path.strip():
        values = _read_toml(path, problems)
    replicas = values["replicas"] = parse_replicas(
        env, values.pop("replicas", None), mysql, problems
    )
    redeliver = values.get("redeliver_after_s", Settings.redeliver_after_s)
    if replicas and isinstance(redeliver, int) and replicas.max_wait_s >= redeliver:
        # The first pass reports no progress while it waits: the listener would publish
        # the batch again mid-wait.
        problems.append(
            f"replicas.max_wait_s = {replicas.max_wait_s:g} must be below "
            f"listener.redeliver_after_s = {redeliver}"
        )

    # Per-replica settings: the environment overrides the shared file.
    # A metrics port of 0 turns that endpoint off (the default); a server id of 0 is none.
    for name, attr, low, top in (
        ("PRIMER_SERVER_ID", "server_id", 1, 2**32 - 1),
        ("PRIMER_METRICS_PORT", "metrics_port", 0, 65535),
        ("PRIMER_WORKER_METRICS_PORT", "worker_metrics_port", 0, 65535),
    ):
        text = env.get(name)
        if text is None:
            continue
        if text.isascii() and text.isdigit() and low <= int(text) <= top:
            values[attr] = int(text)
        else:
            problems.append(f"{name} {text!r} is not an integer in {low}..{top}")

    log_format = env.get("PRIMER_LOG_FORMAT")
    if log_format is not None and log_format.strip().lower() not in ("text", "json"):
        problems.append(f"PRIMER_LOG_FORMAT {log_format!r} is not text or json")

    addr = env.get("PRIMER_METRICS_ADDR")
    if addr is not None:
        values["metrics_addr"] = _address("PRIMER_METRICS_ADDR", addr, problems)

    if "wait_replicas" not in values and is_sentinel_url(redis_url):
        values["wait_replicas"] = 1

    if problems or mysql is None:
        raise ConfigError(problems)
    if not values.get("server_id"):
        values["server_id"] = _default_server_id()
    if len(sources) > 1:
        values["mysql_sources"] = sources
    return Settings(mysql=mysql, redis_url=redis_url, broker_url=broker_url, **values)


def _default_server_id() -> int:
    # A random id per process: replicas of one deployment (identical settings, one host or
    # many) must not share one (two binlog streams with one server_id fail with error 4052).
    # Only a leader streams, so two ids meet only during a takeover: a collision among n
    # replicas is about n^2 / 2^33 likely (docs/takeover.md).
    return random.randint(SERVER_ID_RANGE[0], SERVER_ID_RANGE[1])


def _address(name: str, text: str, problems: list[str]) -> str:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: a NUL in the text
        problems.append(f"{name} {text!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)")
    return text


def _next_db(redis_url: str) -> str:
    """The cache Redis URL with the next database number: the default broker."""
    if is_sentinel_url(redis_url):
        parsed = parse_sentinel_url(redis_url, "PRIMER_REDIS_URL", [])
        if parsed is None:
            return redis_url  # its problems are reported for PRIMER_REDIS_URL
        head, _, query = redis_url.partition("?")
        base = head.split("/", 3)  # scheme, '', hosts, service[/db]
        return f"{'/'.join(base[:3])}/{base[3].split('/')[0]}/{parsed.db + 1}" + (
            f"?{query}" if query else ""
        )
    try:
        parts = urlsplit(redis_url)
    except ValueError:
        return redis_url  # reported by _check_redis_url
    return urlunsplit(parts._replace(path=f"/{_redis_db(redis_url) + 1}"))


def _redis_db(url: str) -> int:
    """The database number a redis:// URL names (0 when it names none or is unreadable)."""
    try:
        path = urlsplit(url).path.lstrip("/")
    except ValueError:
        return 0
    return int(path) if path.isascii() and path.isdigit() else 0


def _check_port(name: str, shown: str, parts: SplitResult, problems: list[str]) -> bool:
    """Append what is wrong with the URL's host and port; False when the URL is unreadable."""
    try:
        port = parts.port
    except ValueError as exc:  # not a number, or above 65535
        problems.append(f"{name} {shown!r} is not a valid URL: {exc}")
        return False
    if port == 0:
        problems.append(f"{name} {shown!r}: port 0 is not a TCP port (1..65535)")
    if not parts.hostname:
        problems.append(f"{name} {shown!r} names no host")
    return True


def _check_redis_url(name: str, url: str, problems: list[str]) -> None:
    if is_sentinel_url(url):
        parse_sentinel_url(url, name, problems)
        return
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        problems.append(f"{name} {shown!r} is not a valid URL: {exc}")
        return
    if parts.scheme not in ("redis", "rediss", "unix"):
        problems.append(
            f"{name} {shown!r}: scheme must be redis://, rediss://, unix:// or redis+sentinel://"
        )
        return
    if parts.scheme == "unix":
        if not parts.path:
            problems.append(f"{name} {shown!r} names no socket path")
        return
    if not _check_port(name, shown, parts, problems):
        return
    path = parts.path.lstrip("/")
    if path and not (path.isascii() and path.isdigit()):
        problems.append(f"{name} {shown!r}: database {path!r} is not a number")
    elif path and int(path) > MAX_REDIS_DB:
        problems.append(
            f"{name} {shown!r}: database {int(path)} does not exist (Redis has 0..{MAX_REDIS_DB})"
        )


def _check_broker_url(url: str, problems: list[str]) -> None:
    shown = redact_url(url)
    try:
        scheme = urlsplit(url).scheme if "://" in url else ""
    except ValueError as exc:
        problems.append(f"PRIMER_BROKER_URL {shown!r} is not a valid URL: {exc}")
        return
    if scheme in ("redis", "rediss", "unix", "redis+sentinel"):
        _check_redis_url("PRIMER_BROKER_URL", url, problems)
    elif scheme in ("amqp", "amqps", "pyamqp"):
        _check_amqp_url(url, shown, problems)
    elif scheme not in ("sqs", "memory"):
        problems.append(f"PRIMER_BROKER_URL {shown!r}: unsupported scheme {scheme!r}")


def _check_amqp_url(url: str, shown: str, problems: list[str]) -> None:
    """Host, port and virtual host of an amqp:// URL (the path is the virtual host: `//` or
    none is `/`; any other `/` in it must be written %2F)."""
    name = "PRIMER_BROKER_URL"
    parts = urlsplit(url)
    if not _check_port(name, shown, parts, problems):
        return
    vhost = parts.path[1:]
    if vhost not in ("", "/") and "/" in vhost:
        problems.append(f"{name} {shown!r}: virtual host {vhost!r} has a '/' (write it as %2F)")


# ---- the TOML file --------------------------------------------------------------------------

Check = Callable[[str, Any, list[str]], Any]


def _int(lo: int, hi: int) -> Check:
    def check(name: str, value: Any, problems: list[str]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            problems.append(f"{name} = {value!r} is not an integer in {lo}..{hi}")
        return value

    return check


def _bool(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, bool):
        problems.append(f"{name} = {value!r} is not true or false")
    return value


def _string(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, str):
        problems.append(f"{name} = {value!r} is not a string")
    return value


def _identifier(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, str) or not value.replace("_", "").isalnum():
        problems.append(f"{name} = {value!r} is not a table name (letters, digits, _)")
    return value


def _columns(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{name} = {value!r} is not a list of column names")
        return frozenset()
    return frozenset(value)


def _template(name: str, value: Any, problems: list[str]) -> Any:
    if not isinstance(value, str):
        problems.append(f"{name} = {value!r} is not a string")
        return value
    try:
        pieces = [(lit, f) for lit, f, _, _ in string.Formatter().parse(value)]
    except ValueError as exc:
        problems.append(f"{name} = {value!r} is not a format string: {exc}")
        return value
    fields = [f for _, f in pieces if f is not None]
    if any(f is not None and not lit for lit, f in pieces[1:]):
        # Keys must parse back: two fields with nothing between them are ambiguous.
        problems.append(f"{name} = {value!r} has two fields with no text between them")
    if sorted(fields) != sorted(KEY_FIELDS):
        problems.append(
            f"{name} = {value!r} must use each of {{{'}, {'.join(KEY_FIELDS)}}} exactly once"
        )
    if value[:1] == "{":
        problems.append(f"{name} = {value!r} must start with literal text (the SCAN anchor)")
    return value


def _optional_int(lo: int, hi: int) -> Check:
    inner = _int(lo, hi)

    def check(name: str, value: Any, problems: list[str]) -> Any:
        return None if value is False else inner(name, value, problems)

    return check


# (TOML section, key) -> (Settings field, check)
_FIELDS: dict[tuple[str, str], tuple[str, Check]] = {
    ("cache", "key_prefix"): ("key_prefix", _string),
    ("cache", "key_template"): ("key_template", _template),
    ("cache", "state_prefix"): ("state_prefix", _string),
    ("cache", "ttl_seconds"): ("ttl_seconds", _int(1, 30 * 86400)),
    ("cache", "compression"): ("compression", _bool),
    ("cache", "ignored_columns"): ("ignored_columns", _columns),
    ("cache", "second_pass_ms"): ("second_pass_ms", _int(0, 60_000)),
    ("cache", "wait_replicas"): ("wait_replicas", _int(0, 16)),
    ("cache", "wait_timeout_ms"): ("wait_timeout_ms", _int(1, 60_000)),
    ("warm", "refresh_seconds"): ("warm_refresh_seconds", _int(10, 30 * 86400)),
    ("refresh", "max_keys"): ("refresh_max_keys", _int(0, 10_000)),
    ("refresh", "idle_seconds"): ("refresh_idle_seconds", _int(1, 30 * 86400)),
    ("refresh", "min_freq"): ("refresh_min_freq", _int(0, 255)),
    ("tables", "chunks"): ("chunks_table", _identifier),
    ("tables", "global_elements"): ("elements_table", _identifier),
    ("listener", "server_id"): ("server_id", _int(1, 2**32 - 1)),
    ("listener", "batch_max_changes"): ("batch_max_changes", _int(1, 100_000)),
    ("listener", "batch_max_wait_ms"): ("batch_max_wait_ms", _int(0, 10_000)),
    ("listener", "leader_ttl_ms"): ("leader_ttl_ms", _int(500, 600_000)),
    ("listener", "max_in_flight"): ("max_in_flight", _int(0, 1000)),
    ("listener", "redeliver_after_s"): ("redeliver_after_s", _int(1, 86_400)),
    ("listener", "fast_lane_max_keys"): ("fast_lane_max_keys", _int(0, 10_000_000)),
    ("listener", "metrics_port"): ("metrics_port", _int(0, 65535)),
    ("celery", "queue_prefix"): ("queue_prefix", _identifier),
    ("status", "max_lag_s"): ("max_lag_s", _int(1, 86400)),
    ("check", "sample"): ("check_sample", _int(0, 1_000_000)),
    ("check", "every_s"): ("check_every_s", _int(1, 86400)),
}
_PARTITION_FIELDS: dict[str, Check] = {
    "table": _identifier,
    "months_ahead": _int(0, 120),
    "retain_months": _optional_int(1, 1200),
    "schedule_hour": _int(0, 23),
    "lock_wait_timeout": _int(1, 3600),
    "attempts": _int(1, 100),
    "allow_drop_rows": _bool,
}


def toml_keys() -> list[str]:
    """Every `section.key` the TOML file accepts, from the tables the parser itself uses."""
    keys = {f"{section}.{key}" for section, key in _FIELDS}
    keys |= {f"partitions.{key}" for key in _PARTITION_FIELDS}
    keys |= {f"replicas.{key}" for key in REPLICA_KEYS}
    keys.add("warm.patterns")
    return sorted(keys)


def _read_toml(path: str, problems: list[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        problems.append(f"PRIMER_CONFIG {path!r} cannot be read: {exc.strerror}")
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(
            f"PRIMER_CONFIG {path!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start}): save it as UTF-8"
        )
        return {}
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"PRIMER_CONFIG {path!r} is not valid TOML: {exc}")
        return {}
    return parse_document(doc, problems)


def parse_document(doc: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """Map a parsed TOML document onto Settings fields, appending every problem found."""
    values: dict[str, Any] = {}
    sections = {
        *("cache", "warm", "refresh", "tables", "listener", "partitions"),
        *("celery", "status", "check", "replicas"),
    }
    for section, body in doc.items():
        if section not in sections:
            problems.append(f"unknown section [{section}] (known: {', '.join(sorted(sections))})")
            continue
        if not isinstance(body, dict):
            problems.append(f"[{section}] is not a table")
            continue
        if section == "partitions":
            values["partitions"] = _partitions(body, problems)
            continue
        if section == "replicas":
            values["replicas"] = body  # parsed with PRIMER_REPLICA_URLS in load_settings
            continue
        for key, value in body.items():
            name = f"{section}.{key}"
            if section == "warm" and key == "patterns":
                values["warm_patterns"] = _warm_patterns(value, problems)
                continue
            if (section, key) not in _FIELDS:
                problems.append(f"unknown setting {name}")
                continue
            attr, check = _FIELDS[(section, key)]
            values[attr] = check(name, value, problems)
    prefix = values.get("key_prefix", DEFAULT_KEY_PREFIX)
    template = values.get("key_template", DEFAULT_KEY_TEMPLATE)
    state = values.get("state_prefix", "primer-cache:")
    if isinstance(prefix, str) and isinstance(template, str) and isinstance(state, str):
        head = prefix + template.split("{", 1)[0]
        problem = namespace_problem(head)
        if problem:
            problems.append(
                f"the primer keys' fixed head {head!r} (cache.key_prefix + the start of "
                f"cache.key_template) {problem}: sweeps delete every key under it"
            )
        if not state:
            problems.append("cache.state_prefix must not be empty")
        elif namespace_problem(state):
            problems.append(f"cache.state_prefix {state!r} {namespace_problem(state)}")
        elif "{" in state or "}" in state:
            # Redis Cluster hash tags: each state key takes its tag from what it guards (a cache
            # key, the listener); a brace in the prefix would pull them all into one slot.
            problems.append(f"cache.state_prefix {state!r} must not contain '{{' or '}}'")
        elif state.startswith(head) or head.startswith(state):
            problems.append(
                f"cache.state_prefix {state!r} overlaps the primer keys' prefix {head!r}: "
                "sweeps would delete the sidecar's own state"
            )
        if head.startswith(LEASE_PREFIX) or LEASE_PREFIX.startswith(head):
            problems.append(
                f"the primer keys' prefix {head!r} overlaps the lease keys' {LEASE_PREFIX!r}"
            )
    return values


def namespace_problem(head: str) -> str | None:
    """Why `head` cannot be a namespace of the sidecar's own (None: it can).

    Every key under the primer keys' fixed head is the sidecar's: a sweep deletes what does
    not parse there (safe side). So the head must be a namespace no other application
    writes under: it ends in a separator (`primer:` takes `primer:x`, never `primers:x`),
    with at least NAMESPACE_MIN characters before it (not a letter or two that other
    applications' keys begin with). docs/failures.md says the same to operators.
    """
    if not head or head[-1] not in SEPARATORS:
        return f"must end in a separator ({' or '.join(repr(c) for c in SEPARATORS)})"
    if len(head) - 1 < NAMESPACE_MIN:
        return f"is too short: at least {NAMESPACE_MIN} characters before the final separator"
    return None


def _partitions(body: Mapping[str, Any], problems: list[str]) -> PartitionSettings:
    values = {}
    for key, value in body.items():
        if key not in _PARTITION_FIELDS:
            problems.append(f"unknown setting partitions.{key}")
            continue
        values[key] = _PARTITION_FIELDS[key](f"partitions.{key}", value, problems)
    try:
        return PartitionSettings(**values)
    except TypeError:  # pragma: no cover - keys were checked above
        return PartitionSettings()


def _warm_patterns(value: Any, problems: list[str]) -> tuple[Query, ...]:
    if not isinstance(value, list):
        problems.append(f"warm.patterns = {value!r} is not a list of tables ([[warm.patterns]])")
        return ()
    patterns = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            problems.append(f"warm.patterns[{index}] = {item!r} is not a table")
            continue
        try:
            patterns.append(Query.from_params(item))
        except ValueError as exc:
            problems.append(f"warm.patterns[{index}]: {exc}")
    return tuple(patterns)
