"""The metrics endpoint both processes serve: `GET /metrics` (Prometheus text format, also on
`/`) and `GET /healthz` (200 "ok", or 503 with the reason), on a daemon thread.

prometheus-client's own `start_http_server` answers every path with metrics; Kubernetes
probes need a status code that says healthy or not, hence this small server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

# The reason the process is unhealthy, or None when it is healthy.
HealthCheck = Callable[[], str | None]


def serve(
    port: int,
    registry: CollectorRegistry,
    health: HealthCheck,
    addr: str = "127.0.0.1",
) -> ThreadingHTTPServer:
    """Serve `registry` (collected afresh at each scrape) and `health` on addr:port; returns
    the server (its thread is a daemon)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/metrics"):
                try:
                    body = generate_latest(registry)
                except Exception as exc:  # an answer, not a dropped connection: a failed scrape
                    log.warning("collecting the metrics failed: %r", exc)
                    self._reply(500, f"collecting the metrics failed: {exc!r}\n".encode())
                    return
                self._reply(200, body, CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                try:
                    problem = health()
                except Exception as exc:  # a health check that breaks is itself a problem
                    problem = f"health check failed: {exc!r}"
                if problem is None:
                    self._reply(200, b"ok\n")
                else:
                    self._reply(503, f"unhealthy: {problem}\n".encode())
            else:
                self._reply(404, b"not found: try /metrics or /healthz\n")

        def _reply(self, code: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the process's own log

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"metrics:{port}", daemon=True)
    thread.start()
    log.info("serving /metrics and /healthz on http://%s:%d", addr, port)
    return server
