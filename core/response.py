"""The primer server's structured response, built from query rows, and its cached bytes.

Pure: no I/O. A cached value is the response as compact JSON (UTF-8), zlib-compressed when
`compression` is on. Readers need not know the setting: compact JSON starts with `{`, a
zlib stream never does (its first byte is 0x78 at the default window size).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from config.query import Query

# Element field -> the source column it is derived from (for consistency checks that must
# ignore fields whose columns change without invalidation, such as `updated_at`).
FIELD_SOURCES = {
    "element_id": "chunk_id",
    "category": "element_category",
    "title": "title",
    "content": "content",
    "priority_score": "priority_score",
    "enforcement_level": "enforcement_level",
    "source_document": "source_document",
    "section_path": "section_path",
    "applies_to": "applies_to",
    "tags": "tags",
    "last_updated": "updated_at",
    "realm_id": "realm_id",
}
VOLATILE_FIELDS = ("retrieved_at",)  # differs between two builds of the same data
_JSON_COLUMNS = ("applies_to", "tags")


def build_response(query: Query, rows: Iterable[Mapping[str, Any]], now: datetime) -> dict:
    """The structured response for `query` over `rows` (already in the query's order)."""
    elements = [element_from_row(row) for row in rows]
    return {
        "success": True,
        "global_elements": elements,
        "total_count": len(elements),
        "categories_included": list(query.categories),
        "priority_threshold": query.priority_threshold,
        "enforcement_level": query.enforcement_level,
        "format": "structured",
        "retrieved_at": _iso(now),
    }


def element_from_row(row: Mapping[str, Any]) -> dict:
    """One element of the response from a row of the primer query (tasks.primer_query)."""
    element = {field: row.get(column) for field, column in FIELD_SOURCES.items()}
    element["priority_score"] = _number(row.get("priority_score"))
    for column in _JSON_COLUMNS:
        element[column] = _json_column(row.get(column))
    element["last_updated"] = _timestamp(row.get("updated_at"))
    return element


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
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cached value is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"cached value is JSON {type(doc).__name__}, not an object")
    return doc


def comparable(response: Mapping[str, Any], ignored_columns: Iterable[str] = ()) -> dict:
    """The response without what may legitimately differ from a fresh build: the retrieval
    time, and element fields derived from columns whose changes invalidate nothing."""
    ignored = {field for field, column in FIELD_SOURCES.items() if column in set(ignored_columns)}
    out = {k: v for k, v in response.items() if k not in VOLATILE_FIELDS}
    elements = response.get("global_elements")
    if isinstance(elements, list):
        out["global_elements"] = [
            {k: v for k, v in element.items() if k not in ignored}
            if isinstance(element, dict)
            else element
            for element in elements
        ]
    return out


def _number(value: Any) -> float | None:
    # DECIMAL(3,2) -> float is exact to its repr ("0.85" -> 0.85), which is what clients compare.
    if value is None:
        return None
    return float(value) if isinstance(value, Decimal | int | float) else float(str(value))


def _json_column(value: Any) -> Any:
    """JSON columns arrive as text from MariaDB (bytes from some drivers); NULL is a list."""
    if value is None:
        return []
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # not valid JSON in the table: serve the text as it is
    return value


def _timestamp(value: Any) -> str | None:
    """ISO 8601 in UTC. The query selects UNIX_TIMESTAMP(updated_at) so the session's time
    zone cannot shift it; a datetime is taken to be UTC already."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(float(value), UTC)
    return _iso(moment)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
