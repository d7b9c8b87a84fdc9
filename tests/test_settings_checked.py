"""Every setting checked whole, up front: any input either loads or fails with ConfigError
(never another exception), and each named case is refused with a line naming it."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import ConfigError, Settings, load_settings
from config.settings import KEY_FIELDS
from config.toml_file import parse_document
from tests.services import child_env, cli

GOOD = {"PRIMER_MYSQL_URL": "mysql://u:secret@db.example:3307/megamind"}

# ---- the property: loads, or ConfigError ----------------------------------------------------

ENV_NAMES = [
    "PRIMER_MYSQL_URL",
    "PRIMER_REDIS_URL",
    "PRIMER_BROKER_URL",
    "PRIMER_REPLICA_URLS",
    "PRIMER_SERVER_ID",
    "PRIMER_METRICS_PORT",
    "PRIMER_WORKER_METRICS_PORT",
    "PRIMER_METRICS_ADDR",
    "PRIMER_LOG_FORMAT",
    "MEGAMIND_DB_HOST",
    "MEGAMIND_DB_PORT",
    "MEGAMIND_DB_NAME",
]
SCHEMES = ["mysql", "redis", "rediss", "unix", "amqp", "amqps", "pyamqp", "memory", "http", ""]
# Pieces a URL is made of, biased to the edges: empty, 0, above 65535, not digits, unicode
# digits ('²'), brackets (IPv6), '%' escapes, '@' and '/' in the wrong place.
PIECES = st.sampled_from(
    ["", "0", "1", "15", "16", "65535", "65536", "-1", "²", "x", "[::1]", "%2F", "@", "/", ":", "?"]
) | st.text(max_size=8)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(SCHEMES))
    user = draw(st.sampled_from(["", "u@", "u:p@", ":p@", "u:%zz@"]))
    host = draw(st.sampled_from(["127.0.0.1", "h", "", "[::1]", "[bad"]) | st.text(max_size=6))
    port = draw(st.sampled_from(["", ":"]) | PIECES.map(lambda p: f":{p}"))
    path = draw(st.sampled_from(["", "/", "//", "/0", "/db", "/a/b"]) | PIECES.map("/{}".format))
    query = draw(st.sampled_from(["", "?ssl_mode=REQUIRED", "?x=1", "?ssl_ca="]))
    return f"{scheme}://{user}{host}{port}{path}{query}" if scheme else f"{host}{port}{path}"


env_values = urls() | st.text(max_size=20) | PIECES
environments = st.dictionaries(st.sampled_from(ENV_NAMES), env_values, max_size=6)

scalars = (
    st.integers(-(2**70), 2**70)
    | st.booleans()
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "{cats}", "p:", "primer:{cats}", "primer-cache:lease:"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
SECTIONS = [
    "cache",
    "warm",
    "refresh",
    "tables",
    "listener",
    "partitions",
    "celery",
    "status",
    "check",
    "replicas",
    "x",
]
KEYS = [
    "key_prefix",
    "key_template",
    "state_prefix",
    "ttl_seconds",
    "patterns",
    "urls",
    "max_wait_s",
    "retain_months",
    "months_ahead",
    "table",
    "metrics_port",
    "server_id",
    "queue_prefix",
    "x",
]


def _template(fields: tuple[str, ...], seps: list[str]) -> str:
    return seps[0] + "".join(f"{{{f}}}{s}" for f, s in zip(fields, seps[1:], strict=True))


SEPARATORS = st.sampled_from(["", ":", "p", "primer:", "|", "{", "}"])
templates = st.permutations(KEY_FIELDS).flatmap(
    lambda fields: st.lists(SEPARATORS, min_size=len(fields) + 1, max_size=len(fields) + 1).map(
        lambda seps: _template(tuple(fields), seps)
    )
)
documents = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(st.sampled_from(KEYS), values | templates, max_size=4) | values,
    max_size=4,
)


def loads_or_config_error(env: dict[str, str], doc: dict[str, Any] | None = None) -> None:
    try:
        if doc is None:
            assert isinstance(load_settings(env), Settings)
        else:
            parse_document(doc, [])
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@settings(max_examples=1000)
@given(environments)
def test_any_environment_loads_or_is_a_config_error(env: dict[str, str]) -> None:
    loads_or_config_error(env)


@settings(max_examples=500)
@given(documents)
def test_any_document_is_checked_without_another_exception(doc: dict[str, Any]) -> None:
    loads_or_config_error({}, doc)
    problems: list[str] = []
    parse_document(doc, problems)  # problems are appended, never raised
    assert all(isinstance(p, str) for p in problems)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_file_loads_or_is_a_config_error(data: bytes) -> None:
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        os.write(fd, data)
        os.close(fd)
        loads_or_config_error({**GOOD, "PRIMER_CONFIG": path})
    finally:
        os.unlink(path)


# ---- one test per named case ----------------------------------------------------------------


def problems_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    return str(err.value)


@pytest.mark.parametrize(
    "name, url",
    [
        ("PRIMER_MYSQL_URL", "mysql://u:secret@db.example:0/megamind"),
        ("PRIMER_REDIS_URL", "redis://127.0.0.1:0/0"),
        ("PRIMER_BROKER_URL", "amqp://guest:secret@127.0.0.1:0//"),
    ],
)
def test_port_0_is_refused_not_taken_for_the_default(name: str, url: str) -> None:
    text = problems_of({**GOOD, name: url})
    assert f"{name} " in text and "port 0 is not a TCP port" in text
    assert "secret" not in text


@pytest.mark.parametrize(
    "name", ["PRIMER_REDIS_URL", "PRIMER_MYSQL_URL", "PRIMER_BROKER_URL", "PRIMER_CONFIG"]
)
def test_an_empty_value_is_an_error_not_the_default_server(name: str) -> None:
    assert f"{name} is set but empty" in problems_of({**GOOD, name: ""})


def test_a_bad_amqp_port_and_virtual_host_are_refused() -> None:
    text = problems_of({**GOOD, "PRIMER_BROKER_URL": "amqp://guest:secret@127.0.0.1:notaport//"})
    assert "PRIMER_BROKER_URL 'amqp://guest:***@127.0.0.1:notaport//' is not a valid URL" in text
    text = problems_of({**GOOD, "PRIMER_BROKER_URL": "amqp://h:5672/a/b"})
    assert "virtual host 'a/b' has a '/'" in text
    for good in ("amqp://h:5672//", "amqp://h:5672/a%2Fb", "amqp://h", "pyamqp://h:1/vh"):
        assert load_settings({**GOOD, "PRIMER_BROKER_URL": good}).celery.broker_url == good


def test_a_redis_database_out_of_range_is_refused() -> None:
    assert "database 16 does not exist" in problems_of({**GOOD, "PRIMER_REDIS_URL": "redis://h/16"})
    # The default broker is the next database: db 15 has none after it.
    text = problems_of({**GOOD, "PRIMER_REDIS_URL": "redis://h:6379/15"})
    assert "the default broker is the cache Redis's next database" in text
    assert "set PRIMER_BROKER_URL" in text
    explicit = {**GOOD, "PRIMER_REDIS_URL": "redis://h:6379/15", "PRIMER_BROKER_URL": "redis://h/0"}
    assert load_settings(explicit).celery.broker_url == "redis://h/0"
    assert (
        load_settings({**GOOD, "PRIMER_REDIS_URL": "redis://h/14"}).celery.broker_url
        == "redis://h/15"
    )


def test_a_configuration_file_that_is_not_utf8_is_one_line(tmp_path: Any) -> None:
    toml = tmp_path / "c.toml"
    toml.write_bytes("[cache]\nkey_prefix = 'caf\u00e9:'\n".encode("latin-1"))
    text = problems_of({**GOOD, "PRIMER_CONFIG": str(toml)})
    assert f"PRIMER_CONFIG {str(toml)!r} is not UTF-8 text (byte 0xe9" in text
    done = cli(child_env({**GOOD, "PRIMER_CONFIG": str(toml)}), "status", timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is not UTF-8 text" in done.stderr


def test_metrics_port_0_turns_metrics_off() -> None:
    s = load_settings({**GOOD, "PRIMER_METRICS_PORT": "0", "PRIMER_WORKER_METRICS_PORT": "0"})
    assert (s.listener.metrics_port, s.metrics.worker_port) == (0, 0)
    assert "PRIMER_SERVER_ID '0'" in problems_of({**GOOD, "PRIMER_SERVER_ID": "0"})


def test_all_problems_at_once() -> None:
    text = problems_of(
        {
            "PRIMER_MYSQL_URL": "mysql://h:0/db",
            "PRIMER_REDIS_URL": "",
            "PRIMER_BROKER_URL": "amqp://h:notaport//",
        }
    )
    for needle in ("PRIMER_MYSQL_URL", "PRIMER_REDIS_URL is set but empty", "notaport"):
        assert needle in text
