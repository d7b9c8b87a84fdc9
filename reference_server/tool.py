"""The primer tool, pure: its MCP description, its arguments checked into a query, and the
three output formats rendered from the structured response (the value the cache holds).

The arguments are the real tool's: `search_environment_primer(include_categories=None,
limit=100, priority_threshold=0.0, format="structured", enforcement_level=None,
session_id=None)`. Each bad one is reported by name (JSON-RPC -32602 with data.field).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from primer_cache_client import PrimerQuery

from config.query import ALL_LEVELS, ENFORCEMENT_LEVELS, FORBIDDEN_CATEGORY_CHARS, Query
from reference_server.jsonrpc import invalid_params

TOOL_NAME = "mcp__megamind__search_environment_primer"
FORMATS = ("structured", "markdown", "condensed")
MAX_LIMIT = 500  # the client library's bound (the real server's largest seed scenario)
QUERY_ARGUMENTS = ("include_categories", "limit", "priority_threshold", "enforcement_level")
ARGUMENTS = (*QUERY_ARGUMENTS, "format", "session_id")

TOOL = {
    "name": TOOL_NAME,
    "description": (
        "Retrieve global environment primer elements with universal rules and guidelines "
        "applicable across all project realms"
    ),
    "inputSchema": {
        "type": "object",
        "properties": {
            "include_categories": {"type": "array", "items": {"type": "string"}},
            "limit": {"type": "integer", "default": 100, "minimum": 1, "maximum": MAX_LIMIT},
            "priority_threshold": {"type": "number", "default": 0.0, "minimum": 0, "maximum": 1},
            "format": {"type": "string", "default": "structured", "enum": list(FORMATS)},
            "enforcement_level": {"type": "string", "enum": list(ENFORCEMENT_LEVELS)},
            "session_id": {"type": "string"},
        },
        "additionalProperties": False,
    },
}


@dataclass(frozen=True, slots=True)
class ToolCall:
    query: Query  # what the cache is keyed by and the database is asked
    format: str
    session_id: str | None

    def query_arguments(self) -> dict[str, Any]:
        """The query's part of the arguments, in the tool's names (the client's PrimerQuery)."""
        level = self.query.enforcement_level
        return {
            "include_categories": list(self.query.categories),
            "priority_threshold": self.query.priority_threshold,
            "enforcement_level": None if level == ALL_LEVELS else level,
            "limit": self.query.limit,
        }


def parse_arguments(arguments: Any) -> ToolCall:
    """The call the arguments ask for; raises RpcError(-32602) naming the first bad field."""
    if not isinstance(arguments, Mapping):
        raise invalid_params("arguments", "must be an object")
    for name in arguments:
        if name not in ARGUMENTS:
            raise invalid_params(str(name), "is not an argument of " + TOOL_NAME)
    categories = _categories(arguments.get("include_categories"))
    limit = arguments.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise invalid_params("limit", f"must be an integer in 1..{MAX_LIMIT}, not {limit!r}")
    threshold = arguments.get("priority_threshold", 0.0)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or math.isnan(threshold)
        or not 0.0 <= threshold <= 1.0
    ):
        raise invalid_params("priority_threshold", f"must be a number in 0..1, not {threshold!r}")
    level = arguments.get("enforcement_level")
    if level is not None and level not in ENFORCEMENT_LEVELS:
        raise invalid_params(
            "enforcement_level", f"must be null or one of {', '.join(ENFORCEMENT_LEVELS)}"
        )
    fmt = arguments.get("format", "structured")
    if fmt not in FORMATS:
        raise invalid_params("format", f"must be one of {', '.join(FORMATS)}, not {fmt!r}")
    session_id = arguments.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise invalid_params("session_id", "must be a string or null")
    try:  # the client library's own checks, the ones its keys rely on
        PrimerQuery.from_arguments(
            include_categories=categories,
            priority_threshold=threshold,
            enforcement_level=level,
            limit=limit,
        )
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        raise invalid_params(field if field in QUERY_ARGUMENTS else "arguments", problem) from None
    query = Query(
        categories=categories,
        priority_threshold=float(threshold),
        enforcement_level=level or ALL_LEVELS,
        limit=limit,
    )
    return ToolCall(query, fmt, session_id)


def _categories(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise invalid_params("include_categories", "must be a list of strings or null")
    for cat in value:
        if not cat or any(ch in FORBIDDEN_CATEGORY_CHARS for ch in cat):
            raise invalid_params(
                "include_categories", f"holds {cat!r}: empty, or one of ': * ? [ ] \\' or space"
            )
    return tuple(value)


# ---- output ------------------------------------------------------------------------------


def render(response: Mapping[str, Any], fmt: str) -> bytes:
    """The MCP tools/call result for `response` in `fmt`, serialised: one text content item
    holding the tool's return value as JSON, as the real server wraps it. The JSON is compact
    where MegaMind indents it by 2 (whitespace only; the same value): the indenting encoder is
    pure Python, about 6 times slower on a 500-element answer, and this server measures the
    cache, not its encoder."""
    if fmt == "structured":
        value: Mapping[str, Any] = response
    else:
        text = markdown(response) if fmt == "markdown" else condensed(response)
        value = {
            "success": response.get("success", True),
            "format": fmt,
            "content": text,
            "total_count": response.get("total_count", 0),
            "retrieved_at": response.get("retrieved_at"),
        }
    text_item = json.dumps(value, separators=(",", ":"))
    return b'{"content":[{"type":"text","text":' + json.dumps(text_item).encode() + b"}]}"


def markdown(response: Mapping[str, Any]) -> str:
    """A markdown document: one section per category, elements in the response's order."""
    lines = ["# Environment Primer", ""]
    by_category: dict[str, list[Mapping[str, Any]]] = {}
    for element in response.get("global_elements", []):
        by_category.setdefault(str(element.get("category") or "uncategorised"), []).append(element)
    for category, elements in by_category.items():
        lines += [f"## {category.title()}", ""]
        for element in elements:
            title = element.get("title") or element.get("element_id")
            lines += [
                f"### {title}",
                f"**Priority:** {element.get('priority_score')} | "
                f"**Enforcement:** {element.get('enforcement_level')}",
                "",
                str(element.get("content") or ""),
                "",
            ]
    lines.append(f"_{response.get('total_count', 0)} elements_")
    return "\n".join(lines)


def condensed(response: Mapping[str, Any]) -> str:
    """One line per element: level, category, priority, title."""
    return "\n".join(
        f"[{str(e.get('enforcement_level') or '-').upper()}] {e.get('category')} "
        f"({e.get('priority_score')}): {e.get('title') or e.get('element_id')}"
        for e in response.get("global_elements", [])
    )
