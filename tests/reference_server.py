"""The reference primer server as a subprocess on a spare port, and calls to it over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reference_server.main import READY
from reference_server.tool import TOOL_NAME
from tests.services import VENV_BIN, Process, free_port, wait_for


@dataclass
class ServerProcess:
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, body: bytes | Any, path: str = "/mcp/jsonrpc") -> tuple[int, Any]:
        """POST `body` (bytes as they are, anything else as JSON): (status, parsed reply)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                raw = reply.read()
                return reply.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def rpc(self, method: str, params: Any = None, request_id: Any = 1) -> dict:
        """One JSON-RPC call; the whole reply object."""
        doc: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            doc["params"] = params
        status, reply = self.post(doc)
        assert status == 200, (status, reply)
        return reply

    def tool(self, **arguments: Any) -> Any:
        """The primer tool's return value (the JSON in the result's text content)."""
        reply = self.rpc("tools/call", {"name": TOOL_NAME, "arguments": arguments})
        assert "result" in reply, reply
        (item,) = reply["result"]["content"]
        assert item["type"] == "text", item
        return json.loads(item["text"])

    def stop(self) -> int:
        return self.process.stop()


def start_server(
    env: dict[str, str], workdir: Path, cache: str = "none", processes: int = 1, *extra: str
) -> ServerProcess:
    """A server (or `processes` of them on one port) that has logged it is serving."""
    port = free_port()
    args = [str(VENV_BIN / "primer-cache-server"), "--port", str(port), "--cache", cache]
    log = workdir / f"server-{cache}-{port}.log"
    process = Process([*args, "--processes", str(processes), *extra], env, log)
    wait_for(
        lambda: process.output().count(READY) >= processes or not process.alive(),
        timeout=60,
        what=f"{processes} server process(es) to log {READY!r}",
    )
    assert process.alive(), process.output()
    return ServerProcess(process, port)
