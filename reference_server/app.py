"""The aiohttp application: JSON-RPC 2.0 on POST /mcp/jsonrpc and POST /, GET /mcp/health,
GET /mcp/stats (the cache's counts as JSON, for the benchmark) and GET /metrics."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from config.query import Query
from reference_server import jsonrpc
from reference_server.caches import ResponseCache
from reference_server.database import Database, DatabaseUnavailable
from reference_server.jsonrpc import Request, RpcError
from reference_server.metrics import LOADER_SECONDS, REQUESTS, TOOL_SECONDS
from reference_server.tool import TOOL, TOOL_NAME, parse_arguments, render

log = logging.getLogger("primer_cache.server")
SERVER_INFO = {"name": "primer-cache-reference-server", "version": "0.1.0"}
PROTOCOL_VERSION = "2024-11-05"
RENDERED_KEEP = 1024  # rendered results kept per process (see Renderer)
JSON_TYPE = "application/json"


class Renderer:
    """Rendered tool results, kept while the cache hands out the very same response object:
    an L1 hit costs no JSON encoding. Keyed by (query, format) and checked by identity, so a
    changed response (a new object) is always rendered afresh."""

    def __init__(self, keep: int = RENDERED_KEEP) -> None:
        self._kept: OrderedDict[tuple[Query, str], tuple[dict, bytes]] = OrderedDict()
        self._keep = keep

    def __call__(self, query: Query, fmt: str, response: dict) -> bytes:
        slot = (query, fmt)
        kept = self._kept.get(slot)
        if kept is not None and kept[0] is response:
            return kept[1]
        rendered = render(response, fmt)
        self._kept[slot] = (response, rendered)
        self._kept.move_to_end(slot)
        if len(self._kept) > self._keep:
            self._kept.popitem(last=False)
        return rendered


class PrimerServer:
    def __init__(self, cache: ResponseCache, database: Database) -> None:
        self.cache = cache
        self.database = database
        self.render = Renderer()

    async def load(self, query: Query) -> dict:
        with LOADER_SECONDS.time():
            return await self.database.load(query)

    # ---- HTTP ------------------------------------------------------------------------------

    async def jsonrpc(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            requests, batch = jsonrpc.parse_body(body)
        except RpcError as exc:
            REQUESTS.labels("-", str(exc.code)).inc()
            return _json_response(jsonrpc.dumps(jsonrpc.error_reply(exc)))
        replies = [reply for item in requests if (reply := await self.answer(item)) is not None]
        if not replies:
            return web.Response(status=204)  # notifications only: nothing to answer
        if batch:
            return _json_response(b"[" + b",".join(replies) + b"]")
        return _json_response(replies[0])

    async def answer(self, item: Request | RpcError) -> bytes | None:
        if isinstance(item, RpcError):
            REQUESTS.labels("-", str(item.code)).inc()
            return jsonrpc.dumps(jsonrpc.error_reply(item))
        try:
            result = await self.dispatch(item)
        except RpcError as exc:
            REQUESTS.labels(_method_label(item.method), str(exc.code)).inc()
            return (
                None if item.is_notification else jsonrpc.dumps(jsonrpc.error_reply(exc, item.id))
            )
        REQUESTS.labels(_method_label(item.method), "ok").inc()
        return None if item.is_notification else jsonrpc.result_reply_bytes(item.id, result)

    async def dispatch(self, item: Request) -> bytes:
        """The serialised result of one request."""
        if item.method == "tools/call":
            return await self.call_tool(item.params)
        if item.method == "tools/list":
            return jsonrpc.dumps({"tools": [TOOL]})
        if item.method == "initialize":
            return jsonrpc.dumps(
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {"tools": {}},
                    "serverInfo": SERVER_INFO,
                }
            )
        if item.method in ("ping", "notifications/initialized"):
            return b"{}"
        raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {item.method}")

    async def call_tool(self, params: dict[str, Any] | list[Any]) -> bytes:
        if not isinstance(params, dict):
            raise jsonrpc.invalid_params("params", "must be an object")
        name = params.get("name")
        if not isinstance(name, str):
            raise jsonrpc.invalid_params("name", "must be the tool's name (a string)")
        if name != TOOL_NAME:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"Unknown tool: {name}", {"name": name})
        call = parse_arguments(params.get("arguments", {}))
        started = time.perf_counter()
        try:
            response = await self.cache.get(call.query, self.load)
        except DatabaseUnavailable as exc:
            log.error("primer tool: %s", exc)
            raise RpcError(jsonrpc.INTERNAL_ERROR, f"Tool execution error: {exc}") from None
        rendered = self.render(call.query, call.format, response)
        TOOL_SECONDS.labels(call.format).observe(time.perf_counter() - started)
        return rendered

    async def health(self, _: web.Request) -> web.Response:
        doc = {"status": "ok", "cache": self.cache.name, "pid": os.getpid()}
        return _json_response(jsonrpc.dumps(doc))

    async def stats(self, _: web.Request) -> web.Response:
        doc = {
            "pid": os.getpid(),
            "cache": self.cache.name,
            "stats": self.cache.stats(),
            "loader": {"calls": self.database.calls, "seconds": self.database.seconds},
        }
        return _json_response(json.dumps(doc, default=str).encode())

    async def metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _method_label(method: str) -> str:
    # Bounded label values: a client cannot mint a time series per made-up method name.
    return method if method in ("tools/call", "tools/list", "initialize", "ping") else "other"


def _json_response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=JSON_TYPE)


def build_app(server: PrimerServer, max_request_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_request_bytes)
    app.router.add_post("/mcp/jsonrpc", server.jsonrpc)
    app.router.add_post("/", server.jsonrpc)
    app.router.add_get("/mcp/health", server.health)
    app.router.add_get("/mcp/stats", server.stats)
    app.router.add_get("/metrics", server.metrics)

    async def close(_: web.Application) -> None:
        await server.cache.aclose()
        server.database.close()

    app.on_cleanup.append(close)
    return app
