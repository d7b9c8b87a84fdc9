"""The reference primer server as its users see it: a real server process on a spare port,
JSON-RPC over HTTP, against a scratch schema (and, end to end, a real sidecar)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis

from adapters.mysql.primer_query import fresh_response
from adapters.redis import leases
from config import load_settings
from config.query import Query
from core.response import comparable, decode
from reference_server.tool import TOOL_NAME
from tests.reference_server import ServerProcess, start_server
from tests.services import VENV_BIN, child_env, connect, scratch_database, unique, wait_for
from tests.sidecar import Sidecar, isolated

IGNORED = ("updated_at", "access_count", "last_accessed")


def _elements(conn: pymysql.Connection) -> None:
    with conn.cursor() as cur:
        for n in range(12):
            category = ("security", "development", "process")[n % 3]
            level = ("required", "recommended", "optional")[n % 3 - 1]
            cur.execute(
                "INSERT INTO megamind_chunks (chunk_id, realm_id, content, element_category, "
                "priority_score, enforcement_level, applies_to, tags) "
                "VALUES (%s, 'GLOBAL', %s, %s, %s, %s, '[\"python\"]', '[\"t\"]')",
                (f"e{n:02d}", f"rule {n}", category, f"0.{n % 10}5", level),
            )
            cur.execute(
                "INSERT INTO megamind_global_elements (element_id, chunk_id, title, summary) "
                "VALUES (%s, %s, %s, 's')",
                (f"ge{n:02d}", f"e{n:02d}", f"Title {n}"),
            )


@pytest.fixture(scope="module")
def schema(
    services: dict[str, str], mysql_params: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], pymysql.Connection, Path]]:
    """A scratch schema with twelve GLOBAL elements and the environment that points at it."""
    workdir = tmp_path_factory.mktemp("server")
    try:
        admin = connect(mysql_params)
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"MariaDB: {exc}")
    with scratch_database(admin) as name:
        conn = connect(mysql_params, name)
        _elements(conn)
        config = workdir / "server.toml"
        config.write_text(f'[cache]\nkey_prefix = "{unique("srv")}:megamind:primer:"\n')
        mysql_url = services["PRIMER_MYSQL_URL"].rsplit("/", 1)[0] + f"/{name}"
        env = child_env(services, PRIMER_MYSQL_URL=mysql_url, PRIMER_CONFIG=str(config))
        yield env, conn, workdir
        conn.close()
    admin.close()


@pytest.fixture(scope="module")
def server(schema: tuple[dict[str, str], pymysql.Connection, Path]) -> Iterator[ServerProcess]:
    env, _, workdir = schema
    proc = start_server(env, workdir, "none", 1, "--max-request-bytes", "4096")
    yield proc
    proc.stop()


def _error(reply: Any, code: int) -> dict:
    assert isinstance(reply, dict) and "error" in reply, reply
    assert reply["error"]["code"] == code, reply
    return reply["error"]


# ---- JSON-RPC errors ---------------------------------------------------------------------


def test_parse_error(server: ServerProcess) -> None:
    status, reply = server.post(b'{"jsonrpc": "2.0", "method": ')
    assert status == 200
    _error(reply, -32700)
    assert reply["id"] is None


@pytest.mark.parametrize(
    "body",
    [
        1,
        "tools/list",
        {"id": 7, "method": "tools/list"},  # no jsonrpc member
        {"jsonrpc": "1.0", "id": 7, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 7, "method": 5},
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": "x"},
        {"jsonrpc": "2.0", "id": {"an": "object"}, "method": "tools/list"},
    ],
)
def test_invalid_request(server: ServerProcess, body: Any) -> None:
    _, reply = server.post(body)
    _error(reply, -32600)


def test_invalid_request_keeps_a_readable_id(server: ServerProcess) -> None:
    _, reply = server.post({"jsonrpc": "1.0", "id": "abc", "method": "tools/list"})
    _error(reply, -32600)
    assert reply["id"] == "abc"


def test_empty_batch_is_invalid(server: ServerProcess) -> None:
    _, reply = server.post([])
    _error(reply, -32600)


def test_unknown_method(server: ServerProcess) -> None:
    reply = server.rpc("tools/run", {})
    assert "Method not found" in _error(reply, -32601)["message"]


def test_unknown_tool(server: ServerProcess) -> None:
    reply = server.rpc("tools/call", {"name": "mcp__megamind__search_query", "arguments": {}})
    assert "mcp__megamind__search_query" in _error(reply, -32601)["message"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": True}, "limit"),
        ({"priority_threshold": 1.5}, "priority_threshold"),
        ({"priority_threshold": "high"}, "priority_threshold"),
        ({"include_categories": "security"}, "include_categories"),
        ({"include_categories": ["a*b"]}, "include_categories"),
        ({"include_categories": ["a{b}"]}, "include_categories"),  # the client's own check
        ({"format": "html"}, "format"),
        ({"enforcement_level": "must"}, "enforcement_level"),
        ({"session_id": 5}, "session_id"),
        ({"sort": "x"}, "sort"),
    ],
)
def test_invalid_params_name_the_field(
    server: ServerProcess, arguments: dict[str, Any], field: str
) -> None:
    reply = server.rpc("tools/call", {"name": TOOL_NAME, "arguments": arguments})
    error = _error(reply, -32602)
    assert error["data"] == {"field": field}
    assert field in error["message"]


def test_invalid_params_of_the_call_itself(server: ServerProcess) -> None:
    assert _error(server.rpc("tools/call", {"arguments": {}}), -32602)["data"] == {"field": "name"}
    reply = server.rpc("tools/call", {"name": TOOL_NAME, "arguments": [1]})
    assert _error(reply, -32602)["data"] == {"field": "arguments"}


def test_request_size_is_capped(server: ServerProcess) -> None:
    arguments = {"include_categories": ["security"] * 1000}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"arguments": arguments}}
    status, _ = server.post(body)
    assert status == 413


def test_batch_and_notifications(server: ServerProcess) -> None:
    status, reply = server.post(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            {"jsonrpc": "2.0", "method": "tools/list"},  # a notification: no reply
            {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        ]
    )
    assert status == 200
    assert [r["id"] for r in reply] == [1, 2]
    assert "result" in reply[0]
    _error(reply[1], -32601)
    status, reply = server.post({"jsonrpc": "2.0", "method": "tools/list"})
    assert (status, reply) == (204, None)


# ---- the tool ----------------------------------------------------------------------------


def test_tools_list(server: ServerProcess) -> None:
    (tool,) = server.rpc("tools/list")["result"]["tools"]
    assert tool["name"] == TOOL_NAME
    assert set(tool["inputSchema"]["properties"]) == {
        "include_categories",
        "limit",
        "priority_threshold",
        "format",
        "enforcement_level",
        "session_id",
    }
    assert tool["inputSchema"]["properties"]["format"]["enum"] == [
        "structured",
        "markdown",
        "condensed",
    ]


def test_structured_is_the_databases_answer(
    server: ServerProcess, schema: tuple[dict[str, str], pymysql.Connection, Path]
) -> None:
    env, conn, _ = schema
    settings = load_settings(env)
    cases = [
        ({}, Query()),
        ({"include_categories": ["security"]}, Query(("security",))),
        (
            {"include_categories": ["security", "process"], "priority_threshold": 0.3},
            Query(("process", "security"), 0.3),
        ),
        (
            {"enforcement_level": "required", "limit": 2},
            Query(enforcement_level="required", limit=2),
        ),
        ({"include_categories": None, "session_id": "s1"}, Query()),
    ]
    for arguments, query in cases:
        answer = server.tool(**arguments)
        expected = fresh_response(conn, settings, query)
        assert comparable(answer) == comparable(expected), arguments
        assert answer["total_count"] > 0


def test_markdown_and_condensed_render_the_same_elements(server: ServerProcess) -> None:
    structured = server.tool(include_categories=["security", "development"])
    elements = structured["global_elements"]
    assert len(elements) == 8
    # one section per category (in the order they first appear), elements in response order
    by_category: dict[str, list[str]] = {}
    for element in elements:
        by_category.setdefault(element["category"], []).append(element["title"])
    expected = [title for titles in by_category.values() for title in titles]
    markdown = server.tool(include_categories=["security", "development"], format="markdown")
    assert markdown["format"] == "markdown" and markdown["total_count"] == 8
    assert markdown["content"].startswith("# Environment Primer")
    lines = markdown["content"].splitlines()
    assert [line[4:] for line in lines if line.startswith("### ")] == expected
    assert [line[3:] for line in lines if line.startswith("## ")] == [
        category.title() for category in by_category
    ]
    condensed = server.tool(include_categories=["security", "development"], format="condensed")
    lines = condensed["content"].splitlines()
    assert len(lines) == 8
    for line, element in zip(lines, structured["global_elements"], strict=True):
        assert line.startswith(f"[{element['enforcement_level'].upper()}] {element['category']}")
        assert line.endswith(element["title"])


def test_the_mcp_result_wraps_one_text_item(server: ServerProcess) -> None:
    reply = server.rpc("tools/call", {"name": TOOL_NAME, "arguments": {"limit": 1}}, "req-9")
    assert reply["jsonrpc"] == "2.0" and reply["id"] == "req-9"
    assert [item["type"] for item in reply["result"]["content"]] == ["text"]
    assert json.loads(reply["result"]["content"][0]["text"])["success"] is True


def test_health_and_metrics(server: ServerProcess) -> None:
    status, body = server.get("/mcp/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    server.tool(limit=3)
    status, body = server.get("/metrics")
    assert status == 200
    assert 'primer_server_requests_total{method="tools/call",outcome="ok"}' in body
    assert "primer_server_loader_seconds_count" in body


def _listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses with a socket listening on `port` (Linux /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_binds_loopback_only(server: ServerProcess) -> None:
    """The default host is 127.0.0.1, not every interface."""
    assert _listening_addresses(server.port) == {"127.0.0.1"}


# ---- processes ---------------------------------------------------------------------------


def test_two_processes_share_one_port(
    schema: tuple[dict[str, str], pymysql.Connection, Path],
) -> None:
    env, _, workdir = schema
    proc = start_server(env, workdir, "primer-cache", 2)  # each with its own L1
    try:
        pids: set[int] = set()

        def both_answered() -> bool:
            # each urllib call is a new connection; the kernel spreads them over the listeners
            status, body = proc.get("/mcp/health")
            assert status == 200, body
            pids.add(json.loads(body)["pid"])
            answer = proc.tool(limit=2)
            assert answer["total_count"] == 2
            return len(pids) == 2

        wait_for(both_answered, timeout=30, interval=0.0, what="both server processes to answer")
    finally:
        assert proc.stop() == 0


def test_a_second_server_on_a_taken_port_fails_in_one_line(
    server: ServerProcess, schema: tuple[dict[str, str], pymysql.Connection, Path]
) -> None:
    """Without --reuse-port a second server does not join a running one's port (another
    checkout's `make run` must not take half its requests): one line, exit 1."""
    env, _, _ = schema
    done = subprocess.run(
        [str(VENV_BIN / "primer-cache-server"), "--port", str(server.port), "--cache", "none"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{server.port}" in done.stderr
    assert "Traceback" not in done.stderr


# ---- end to end: a change, the sidecar, the server's next answer --------------------------


@pytest.mark.parametrize("cache", ["primer-cache"])
def test_answer_equals_the_database_after_a_change(
    cache: str,
    services: dict[str, str],
    mysql_params: dict[str, Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A cached answer, a change committed, the sidecar's sweep: within a second the server
    answers what the database holds (the seed's plan as written keeps the old answer for its
    L1's 300 s: run with cache="seed" and this fails)."""
    with isolated(Sidecar, services, mysql_params, redis_client, tmp_path) as car:
        for n in range(6):
            car.insert_chunk(f"s{n}", "security", f"0.{n}5", "required", title=f"S{n}")
        car.start_worker()
        car.start_listener()
        car.sync()
        proc = start_server(car.env, tmp_path, cache)
        try:
            query = Query(("security",))
            arguments = {"include_categories": ["security"]}
            first = proc.tool(**arguments)
            assert comparable(first, IGNORED) == comparable(
                fresh_response(car.conn, car.settings, query), IGNORED
            )
            # the server filled Redis with the sidecar's value format
            key = car.keys.build(query)
            stored = wait_for(lambda: redis_client.get(key), timeout=5, what=f"{key} filled")
            assert comparable(decode(stored)) == comparable(first)
            assert comparable(proc.tool(**arguments)) == comparable(first)  # served cached

            car.execute(
                "UPDATE megamind_chunks SET priority_score = 0.99, content = 'moved' "
                "WHERE chunk_id = 's0'"
            )
            car.sync()
            expected = comparable(fresh_response(car.conn, car.settings, query), IGNORED)
            assert expected != comparable(first, IGNORED)
            wait_for(
                lambda: comparable(proc.tool(**arguments), IGNORED) == expected,
                timeout=1.0,
                interval=0.01,
                what="the server's answer to equal the database's within 1 s of the sweep",
            )
        finally:
            proc.stop()


# ---- least privilege: the primer server's Redis user ---------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "reference-server.md"


def documented_acl_rules() -> list[str]:
    """The ACL rules docs/reference-server.md gives for the primer server's user (the one
    line starting `ACL SETUSER primer-server`), with the secret and prefix left to fill in."""
    (line,) = [
        line.strip()
        for line in DOCS.read_text().splitlines()
        if line.strip().startswith("ACL SETUSER primer-server ")
    ]
    return line.split()[3:]


def test_the_documented_acl_user_is_enough(
    schema: tuple[dict[str, str], pymysql.Connection, Path], redis_client: redis.Redis
) -> None:
    """The server (primer-cache) as the documented least-privilege user: reads and fills go
    through the lease functions, the L1 is tracked, and no cache fault is counted."""
    env, _, workdir = schema
    settings = load_settings(env)
    user, secret = unique("primer-server-"), unique("pw")
    prefix = settings.cache.key_prefix
    rules = [
        rule.replace("SECRET", secret).replace("megamind:primer:", prefix)
        for rule in documented_acl_rules()
    ]
    leases.load_library(redis_client)  # the sidecar loads it; this user may not
    redis_client.execute_command("ACL", "SETUSER", user, "reset", *rules)
    try:
        url = settings.cache.url.replace("redis://", f"redis://{user}:{secret}@", 1)
        proc = start_server({**env, "PRIMER_REDIS_URL": url}, workdir, "primer-cache")
        try:
            for _ in range(3):
                assert proc.tool(include_categories=["process"])["total_count"] == 4
            status, body = proc.get("/mcp/stats")
            assert status == 200, body
            client = json.loads(body)["stats"]["client"]
            assert client["cache_faults"] == 0, client
            assert client["fills"] == 1 and client["l1"]["hits"] >= 1, client
            assert client["tracking"]["established"] is True, client
        finally:
            proc.stop()
    finally:
        redis_client.execute_command("ACL", "DELUSER", user)
