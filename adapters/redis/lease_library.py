"""The Redis function library `primer_cache`: names, Lua source and reply shapes.

They belong to the primer server's client library (`primer_cache_client.functions`, where the
contract and the functions' flags are documented) and are imported from there: one copy,
loaded by the sidecar and called by the primer server.
"""

from __future__ import annotations

from primer_cache_client.functions import (
    FILL,
    FILLED_GRACE_MS,
    INVALIDATE,
    LIBRARY,
    LIBRARY_NAME,
    READ,
    RELEASE,
    WARM_LEASE,
    Answer,
    parse_answer,
)

__all__ = [
    "FILL",
    "FILLED_GRACE_MS",
    "INVALIDATE",
    "LIBRARY",
    "LIBRARY_NAME",
    "READ",
    "RELEASE",
    "WARM_LEASE",
    "Answer",
    "parse_answer",
]
