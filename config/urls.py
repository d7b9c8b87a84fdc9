"""The cache Redis's and the broker's URLs: checked whole, each problem naming the variable."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

from config.secrets import redact_url
from config.sentinel import is_sentinel_url, parse_sentinel_url

MAX_REDIS_DB = 15  # Redis's default `databases 16`; a Redis Cluster has database 0 only


def default_broker_url(redis_url: str, problems: list[str]) -> str:
    """The broker when PRIMER_BROKER_URL is unset: the cache Redis's next database."""
    broker_url = _next_db(redis_url)
    if _redis_db(broker_url) > MAX_REDIS_DB:
        problems.append(
            f"the default broker is the cache Redis's next database, "
            f"{redact_url(broker_url)!r}, which Redis does not have (databases "
            f"0..{MAX_REDIS_DB}): set PRIMER_BROKER_URL"
        )
    return broker_url


def _next_db(redis_url: str) -> str:
    """The cache Redis URL with the next database number."""
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
        return redis_url  # reported by check_redis_url
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


def check_redis_url(name: str, url: str, problems: list[str]) -> None:
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
    elif parts.scheme == "unix":
        if not parts.path:
            problems.append(f"{name} {shown!r} names no socket path")
    elif _check_port(name, shown, parts, problems):
        _check_database(name, shown, parts.path.lstrip("/"), problems)


def _check_database(name: str, shown: str, path: str, problems: list[str]) -> None:
    if path and not (path.isascii() and path.isdigit()):
        problems.append(f"{name} {shown!r}: database {path!r} is not a number")
    elif path and int(path) > MAX_REDIS_DB:
        problems.append(
            f"{name} {shown!r}: database {int(path)} does not exist (Redis has 0..{MAX_REDIS_DB})"
        )


def check_broker_url(url: str, problems: list[str]) -> None:
    shown = redact_url(url)
    try:
        scheme = urlsplit(url).scheme if "://" in url else ""
    except ValueError as exc:
        problems.append(f"PRIMER_BROKER_URL {shown!r} is not a valid URL: {exc}")
        return
    if scheme in ("redis", "rediss", "unix", "redis+sentinel"):
        check_redis_url("PRIMER_BROKER_URL", url, problems)
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
