"""MySQL connection settings: parsed from a URL or the primer server's MEGAMIND_DB_* variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class MySQLSettings:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    def __repr__(self) -> str:  # never print the password
        return f"MySQLSettings({self.user}@{self.host}:{self.port}/{self.database})"

    def url(self, *, hide_password: bool = True) -> str:
        secret = "***" if hide_password and self.password else self.password
        return f"mysql://{self.user}:{secret}@{self.host}:{self.port}/{self.database}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Arguments for pymysql.connect and BinLogStreamReader's connection_settings."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }

    @classmethod
    def from_url(cls, url: str, problems: list[str]) -> MySQLSettings | None:
        """Parse mysql://user:pass@host:port/db; append what is wrong to `problems`."""
        shown = _hide_password(url)
        try:
            parts = urlsplit(url)
            port = parts.port or 3306
        except ValueError as exc:
            problems.append(f"PRIMER_MYSQL_URL {shown!r} is not a valid URL: {exc}")
            return None
        before = len(problems)
        if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
            problems.append(f"PRIMER_MYSQL_URL {shown!r}: scheme must be mysql://")
        if not parts.hostname:
            problems.append(f"PRIMER_MYSQL_URL {shown!r} names no host")
        database = parts.path.lstrip("/")
        if not database or "/" in database:
            problems.append(f"PRIMER_MYSQL_URL {shown!r} names no database (mysql://…/DBNAME)")
        if len(problems) > before:
            return None
        return cls(
            host=parts.hostname or "",
            port=port,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=unquote(database),
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
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            problems.append(f"MEGAMIND_DB_PORT {port_text!r} is not a TCP port")
            return None
        return cls(
            host=host,
            port=int(port_text),
            user=env.get("MEGAMIND_DB_USER", "root"),
            password=env.get("MEGAMIND_DB_PASSWORD", ""),
            database=env.get("MEGAMIND_DB_NAME", "megamind_database"),
        )


def _hide_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password:
            return url.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        pass
    return url
