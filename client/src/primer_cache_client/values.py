"""The value format: a cached primer response is its compact JSON (UTF-8), zlib-compressed when
`compression` is on. Readers need not know the setting: compact JSON of an object starts with
`{`, a zlib stream never does (its first byte is 0x78 at the default window size)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any


def encode(response: Mapping[str, Any], *, compression: bool) -> bytes:
    """The cached bytes: compact JSON, then zlib when `compression` is on."""
    text = json.dumps(response, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    raw = text.encode("utf-8")
    return zlib.compress(raw) if compression else raw


def decode(value: bytes | str) -> dict:
    """The response a cached value holds, compressed or not. Raises ValueError when it is
    neither compact JSON nor zlib-compressed JSON of an object. (A str is what a client with
    decode_responses hands over: only uncompressed values survive that.)"""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if not value.startswith(b"{"):
        try:
            value = zlib.decompress(value)
        except zlib.error as exc:
            raise ValueError(f"cached value is neither JSON nor zlib: {exc}") from None
    try:
        doc = json.loads(value.decode("utf-8"))  # str: json skips guessing the encoding
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cached value is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"cached value is JSON {type(doc).__name__}, not an object")
    return doc
