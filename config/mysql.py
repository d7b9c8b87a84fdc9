"""MySQL connection settings: parsed from a URL or the primer server's MEGAMIND_DB_* variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from config.secrets import redact_url

# TLS options a mysql:// URL may carry in its query (as MySQL's own clients name them).
TLS_OPTIONS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_mode")
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")


@dataclass(frozen=True)
class MySQLSettings:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    # (name, value) pairs from TLS_OPTIONS; a tuple keeps the frozen dataclass hashable
    tls: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never print the password
        return f"MySQLSettings({self.user}@{self.host}:{self.port}/{self.database})"

    def url(self, *, hide_password: bool = True) -> str:
        secret = "***" if hide_password and self.password else self.password
        return f"mysql://{self.user}:{secret}@{self.host}:{self.port}/{self.database}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Arguments for pymysql.connect and BinLogStreamReader's connection_settings."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        ssl = self.ssl_params()
        if ssl is not None:
            kwargs["ssl"] = ssl
        return kwargs

    def ssl_params(self) -> dict[str, Any] | None:
        """PyMySQL's `ssl` argument for the URL's TLS options (None: plain TCP).

        ssl_mode follows MySQL's clients: REQUIRED encrypts without checking the certificate,
        VERIFY_CA checks it against ssl_ca, VERIFY_IDENTITY also checks the host name (the
        default when ssl_ca is given). PREFERRED is plain TCP: PyMySQL has no opportunistic TLS.
        """
        options = dict(self.tls)
        mode = options.get("ssl_mode", "VERIFY_IDENTITY" if "ssl_ca" in options else "")
        if mode in ("", "DISABLED", "PREFERRED"):
            return None
        params: dict[str, Any] = {
            "check_hostname": mode == "VERIFY_IDENTITY",
            "verify_mode": "none" if mode == "REQUIRED" else "required",
        }
        for option, key in (("ssl_ca", "ca"), ("ssl_cert", "cert"), ("ssl_key", "key")):
            if option in options:
                params[key] = options[option]
        return params

    @classmethod
    def from_url(
        cls,
        url: str,
        problems: list[str],
        name: str = "PRIMER_MYSQL_URL",
        *,
        need_database: bool = True,
    ) -> MySQLSettings | None:
        """Parse mysql://user:pass@host:port/db; append what is wrong (as `name`) to
        `problems`. Without `need_database` the /db part may be left out (read replicas)."""
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            problems.append(f"{name} {shown!r} is not a valid URL: {exc}")
            return None
        before = len(problems)
        if port == 0:  # not "the default": port 0 reached another server on 3306
            problems.append(f"{name} {shown!r}: port 0 is not a TCP port (1..65535)")
        if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
            problems.append(f"{name} {shown!r}: scheme must be mysql://")
        if not parts.hostname:
            problems.append(f"{name} {shown!r} names no host")
        database = parts.path.lstrip("/")
        if (need_database and not database) or "/" in database:
            problems.append(f"{name} {shown!r} names no database (mysql://…/DBNAME)")
        tls = _tls_options(parts.query, shown, problems)
        if len(problems) > before:
            return None
        return cls(
            host=parts.hostname or "",
            port=port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=unquote(database),
            tls=tls,
        )

    @classmethod
    def from_megamind_env(cls, env: Mapping[str, str], problems: list[str]) -> MySQLSettings | None:
        """The primer server's own MEGAMIND_DB_HOST/PORT/NAME/USER/PASSWORD."""
        host = env.get("MEGAMIND_DB_HOST")
        if not host:
            problems.append(
                "PRIMER_MYSQL_URL is not set (nor MEGAMIND_DB_HOST): "
                "set PRIMER_MYSQL_URL=mysql://user:pass@host:port/db"
            )
            return None
        port_text = env.get("MEGAMIND_DB_PORT", "3306")
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            problems.append(f"MEGAMIND_DB_PORT {port_text!r} is not a TCP port")
            return None
        return cls(
            host=host,
            port=int(port_text),
            user=env.get("MEGAMIND_DB_USER", "root"),
            password=env.get("MEGAMIND_DB_PASSWORD", ""),
            database=env.get("MEGAMIND_DB_NAME", "megamind_database"),
        )


def parse_sources(text: str, problems: list[str]) -> tuple[MySQLSettings, ...]:
    """PRIMER_MYSQL_URL as an ordered list of sources: one mysql:// URL, or several separated
    by commas (a comma inside a password is written %2C). Every source must name the same
    database: they are one primary and the replicas that may be promoted in its place. One
    problem line per bad source, naming it by its place in the list."""
    parts = [part.strip() for part in text.split(",")]
    several = len(parts) > 1
    sources: list[MySQLSettings] = []
    for index, part in enumerate(parts, 1):
        name = f"PRIMER_MYSQL_URL source {index}" if several else "PRIMER_MYSQL_URL"
        if not part:
            problems.append(f"{name} is empty (two commas in a row, or one at an end)")
            continue
        source = MySQLSettings.from_url(part, problems, name)
        if source is not None:
            sources.append(source)
    databases = sorted({source.database for source in sources})
    if len(databases) > 1:
        problems.append(
            f"PRIMER_MYSQL_URL sources name different databases ({', '.join(databases)}): "
            "they must be one primary and its replicas, with one database"
        )
    places = [f"{source.host}:{source.port}" for source in sources]
    repeated = sorted({place for place in places if places.count(place) > 1})
    if repeated:
        problems.append(f"PRIMER_MYSQL_URL names {', '.join(repeated)} more than once")
    return tuple(sources)


def _tls_options(query: str, shown: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    options = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in TLS_OPTIONS:
            problems.append(
                f"PRIMER_MYSQL_URL {shown!r}: unknown option {name!r} "
                f"(known: {', '.join(TLS_OPTIONS)})"
            )
        elif name == "ssl_mode" and value.upper() not in SSL_MODES:
            problems.append(
                f"PRIMER_MYSQL_URL {shown!r}: ssl_mode {value!r} is not one of "
                f"{', '.join(SSL_MODES)}"
            )
        elif not value:
            problems.append(f"PRIMER_MYSQL_URL {shown!r}: option {name!r} has no value")
        else:
            options.append((name, value.upper() if name == "ssl_mode" else value))
    return tuple(options)
