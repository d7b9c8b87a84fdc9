"""Redis Sentinel URLs: `redis+sentinel://[user:password@]host1:26379,host2:26379/<service>[/<db>]`.

The hosts are the sentinels; `<service>` is the name they monitor the primary under (their
`sentinel monitor <service> …`); `<db>` the database number (default 0). The user and
password are the Redis servers' (primary and replicas); the sentinels' own password, if
they have one, is the query option `sentinel_password`. A password with a comma in it is
written %2C, as in any URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

from config.secrets import redact_url

SCHEME = "redis+sentinel"
OPTIONS = ("sentinel_password",)


def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    def kombu_url(self) -> str:
        """The same, as kombu's sentinel transport spells it (`sentinel://…;sentinel://…`,
        the service given apart as transport option master_name)."""
        auth = ""
        if self.password is not None:
            user = quote(self.username or "", safe="")
            auth = f"{user}:{quote(self.password, safe='')}@"
        return ";".join(
            f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.sentinels
        )

    def kombu_options(self) -> dict[str, object]:
        options: dict[str, object] = {"master_name": self.service}
        if self.sentinel_password is not None:
            options["sentinel_kwargs"] = {"password": self.sentinel_password}
        return options


def parse_sentinel_url(url: str, name: str, problems: list[str]) -> SentinelURL | None:
    """Parse a redis+sentinel:// URL; append one line per problem (naming `name`)."""
    shown = redact_url(url)
    rest = url[len(SCHEME) + 3 :]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    auth, _, hosts_text = netloc.rpartition("@")
    before = len(problems)
    sentinels = []
    for part in hosts_text.split(","):
        host, _, port_text = part.strip().rpartition(":")
        if not host:
            host, port_text = port_text, "26379"
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            problems.append(f"{name} {shown!r}: sentinel {part.strip()!r} is not host:port")
            continue
        sentinels.append((host, int(port_text)))
    pieces = [piece for piece in path.split("/") if piece]
    service = unquote(pieces[0]) if pieces else ""
    if not service:
        problems.append(f"{name} {shown!r} names no service (redis+sentinel://hosts/SERVICE)")
    db_text = pieces[1] if len(pieces) > 1 else "0"
    if not db_text.isdigit() or len(pieces) > 2:
        problems.append(f"{name} {shown!r}: database {'/'.join(pieces[1:])!r} is not a number")
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in OPTIONS:
            problems.append(
                f"{name} {shown!r}: unknown option {key!r} (known: {', '.join(OPTIONS)})"
            )
        else:
            options[key] = value
    if len(problems) > before:
        return None
    username, password = None, None
    if auth:
        user_text, colon, password_text = auth.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    return SentinelURL(
        tuple(sentinels),
        service,
        int(db_text),
        username,
        password,
        options.get("sentinel_password"),
    )
