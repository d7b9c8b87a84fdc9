"""Helpers for the client library's tests: a private key prefix per test (the client tracks
only it, and the test deletes only what it made), versioned loaders, waiting on counters."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from primer_cache_client import PrimerQuery


def fresh_prefix() -> str:
    return f"pcc-test:{uuid.uuid4().hex[:10]}:"


class Database:
    """The loader's world: a version per query that a test bumps to "change the rows"."""

    def __init__(self) -> None:
        self.version = 1
        self.calls = 0
        self._lock = threading.Lock()

    def load(self, query: PrimerQuery) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            version = self.version
        return {
            "global_elements": [{"element_id": "e1", "v": version}],
            "cats": list(query.categories),
        }

    async def aload(self, query: PrimerQuery) -> dict[str, Any]:
        return self.load(query)


def version_of(response: dict[str, Any]) -> int:
    return int(response["global_elements"][0]["v"])


@contextmanager
def cleaned(client: redis.Redis, prefix: str) -> Iterator[None]:
    """Delete the keys under `prefix` (and their leases) when the block ends."""
    try:
        yield
    finally:
        for pattern in (f"{prefix}*", f"primer-cache:lease:*{prefix}*"):
            nodes = client.get_primaries() if hasattr(client, "get_primaries") else [None]
            for node in nodes:
                target = client.get_redis_connection(node) if node is not None else client  # type: ignore[attr-defined]
                keys = list(target.scan_iter(match=pattern, count=1000))
                for key in keys:
                    target.unlink(key)
