"""Connection failures as an operator reads them: one line naming the server (its URL with the
password hidden) and the cause, never a traceback.

Every CLI command and the listener's start turn what `describe` recognises into that line and
exit status 1 (cli/main.py); `status` shows it as a problem. What it does not recognise is a
bug, and keeps its traceback.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import amqp.exceptions
import kombu.exceptions
import pymysql
import redis

from config import Settings
from config.secrets import redact_url

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class ServerUnreachable(Exception):
    """A server could not be reached, or refused us (TLS, credentials); the message is the
    one line to show: the server's URL without its password, and the cause."""


def describe(exc: BaseException, settings: Settings | None) -> str | None:
    """The one line for `exc` when it (or what caused it) is a connection failure; None for
    any other error. `settings` name the servers (None: the cause alone)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        line = _describe_one(current, settings)
        if line is not None:
            return line
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _describe_one(exc: BaseException, settings: Settings | None) -> str | None:
    if isinstance(exc, ServerUnreachable):
        return str(exc)
    if isinstance(exc, redis.RedisError) and _is_redis_connection_failure(exc):
        return f"{_which_redis(exc, settings)}: {_cause(exc)}"
    if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError):
        where = f"MySQL {settings.mysql.url()}" if settings else "MySQL"
        return f"{where}: {_mysql_cause(exc)}"
    broker_errors = (
        kombu.exceptions.OperationalError,
        amqp.exceptions.ConnectionError,
        amqp.exceptions.AccessRefused,
    )
    if isinstance(exc, broker_errors):
        where = f"broker {redact_url(settings.celery.broker_url)}" if settings else "broker"
        return f"{where}: {_cause(exc)}"
    if isinstance(exc, ssl.SSLError | ConnectionError | TimeoutError):
        return f"connection failed: {_cause(exc)}"
    return None


def _is_redis_connection_failure(exc: redis.RedisError) -> bool:
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return True  # AuthenticationError is a ConnectionError: refused credentials too
    text = str(exc)
    # An ACL or requirepass server answers commands with these when we did not log in; a
    # server with fewer databases than the URL's number refuses the SELECT of each connection.
    return text.startswith(("NOAUTH", "WRONGPASS", "NOPERM", "DB index is out of range"))


def _which_redis(exc: BaseException, settings: Settings | None) -> str:
    """The cache Redis, unless the error names the broker Redis's address (the result backend
    of `warm` lives there)."""
    if settings is None:
        return "Redis"
    broker = settings.celery.broker_url
    elsewhere = _address(broker) != _address(settings.cache.url)
    if broker.startswith(REDIS_SCHEMES) and elsewhere and _address(broker) in str(exc):
        return f"broker Redis {redact_url(broker)}"
    return f"cache Redis {redact_url(settings.cache.url)}"


def _address(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        return url


def _mysql_cause(exc: pymysql.Error) -> str:
    if len(exc.args) == 2 and isinstance(exc.args[0], int):
        return f"{exc.args[1]} (error {exc.args[0]})"
    return _cause(exc)


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
