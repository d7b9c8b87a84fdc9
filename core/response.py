"""The primer server's structured response, built from query rows, and its cached bytes.

Pure: no I/O. The cached bytes (`encode`, `decode`: compact JSON, zlib-compressed when
`compression` is on) are the primer server's client library's value format,
`primer_cache_client.values`, imported from there: one copy, shared with the primer server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from primer_cache_client.values import decode, encode

from config.query import Query

__all__ = [
    "FIELD_SOURCES",
    "VOLATILE_FIELDS",
    "build_response",
    "comparable",
    "decode",
    "element_from_row",
    "encode",
]

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
