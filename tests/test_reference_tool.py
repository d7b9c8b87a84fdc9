"""The reference server's pure parts: JSON-RPC framing, the tool's arguments, its output."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from primer_cache_client import PrimerQuery

from config.query import ALL_LEVELS
from config.settings import DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE
from core.keys import KeyFormat
from reference_server import jsonrpc
from reference_server.jsonrpc import RpcError
from reference_server.tool import condensed, markdown, parse_arguments, render
from tests.strategies import CATEGORY_NAMES, thresholds

arguments = st.fixed_dictionaries(
    {},
    optional={
        "include_categories": st.none() | st.lists(st.sampled_from(CATEGORY_NAMES), max_size=3),
        "limit": st.integers(1, 500),
        "priority_threshold": thresholds,
        "enforcement_level": st.none() | st.sampled_from(["required", "recommended", "optional"]),
        "format": st.sampled_from(["structured", "markdown", "condensed"]),
        "session_id": st.none() | st.text(max_size=5),
    },
)


@given(arguments)
def test_the_server_and_the_client_key_a_call_alike(args: dict[str, Any]) -> None:
    """The seed and none modes key by the sidecar's KeyFormat, the client by PrimerQuery: one
    call must be one key to both, or the sidecar would invalidate a key nobody reads."""
    call = parse_arguments(args)
    sidecar_key = KeyFormat(DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE).build(call.query)
    client_query = PrimerQuery.from_arguments(**call.query_arguments())
    assert client_query.key(DEFAULT_KEY_PREFIX) == sidecar_key
    assert call.format == args.get("format", "structured")
    level = args.get("enforcement_level")
    assert call.query.enforcement_level == (level or ALL_LEVELS)
    assert call.query.limit == args.get("limit", 100)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_body_parses_or_is_a_spec_error(body: bytes) -> None:
    try:
        items, _ = jsonrpc.parse_body(body)
    except RpcError as exc:
        assert exc.code in (jsonrpc.PARSE_ERROR, jsonrpc.INVALID_REQUEST)
        return
    for item in items:
        if isinstance(item, RpcError):
            assert item.code == jsonrpc.INVALID_REQUEST


@given(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
def test_a_result_reply_is_json_with_the_requests_id(request_id: Any, result: dict) -> None:
    raw = jsonrpc.result_reply_bytes(request_id, json.dumps(result).encode())
    assert json.loads(raw) == {"jsonrpc": "2.0", "id": request_id, "result": result}


def test_invalid_params_name_the_field() -> None:
    with pytest.raises(RpcError) as caught:
        parse_arguments({"limit": 5, "colour": "red"})
    assert caught.value.code == jsonrpc.INVALID_PARAMS
    assert caught.value.data == {"field": "colour"}


ELEMENTS = [
    {"element_id": "a", "category": "security", "title": "A", "content": "x", "priority_score": 0.9,
     "enforcement_level": "required"},
    {"element_id": "b", "category": "process", "title": None, "content": "y", "priority_score": 0.8,
     "enforcement_level": None},
    {"element_id": "c", "category": "security", "title": "C", "content": "z", "priority_score": 0.7,
     "enforcement_level": "optional"},
]  # fmt: skip
RESPONSE = {"success": True, "global_elements": ELEMENTS, "total_count": 3, "retrieved_at": "t"}


def test_render_wraps_the_value_in_one_text_item() -> None:
    result = json.loads(render(RESPONSE, "structured"))
    (item,) = result["content"]
    assert item["type"] == "text" and json.loads(item["text"]) == RESPONSE
    value = json.loads(json.loads(render(RESPONSE, "condensed"))["content"][0]["text"])
    assert value["format"] == "condensed" and value["total_count"] == 3
    assert value["content"] == condensed(RESPONSE)


def test_markdown_groups_by_category_in_first_seen_order() -> None:
    lines = markdown(RESPONSE).splitlines()
    assert [line for line in lines if line.startswith("#")] == [
        "# Environment Primer",
        "## Security",
        "### A",
        "### C",
        "## Process",
        "### b",  # no title: the element id
    ]


def test_condensed_is_one_line_per_element() -> None:
    assert condensed(RESPONSE).splitlines() == [
        "[REQUIRED] security (0.9): A",
        "[-] process (0.8): b",
        "[OPTIONAL] security (0.7): C",
    ]
