"""The server's own metrics (prometheus-client's default registry, where the client library
registers its own too: GET /metrics serves them all, for this process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "primer_server_requests",
    "JSON-RPC requests answered, by method and outcome (ok or the error code)",
    ["method", "outcome"],
)
TOOL_SECONDS = Histogram(
    "primer_server_tool_seconds",
    "Time to answer one tools/call of the primer tool, by format",
    ["format"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LOADER_SECONDS = Histogram(
    "primer_server_loader_seconds",
    "Time the primer query took (a cache miss, or every read without a cache)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
