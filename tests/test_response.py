"""The structured response and its cached bytes (pure)."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.query import Query
from core.response import build_response, comparable, decode, element_from_row, encode

NOW = datetime(2025, 7, 19, 12, 30, 5, 123456, tzinfo=UTC)


def row(**overrides: object) -> dict:
    base: dict[str, object] = {
        "chunk_id": "c1",
        "realm_id": "GLOBAL",
        "content": "Always validate input",
        "source_document": "security.md",
        "section_path": "/input",
        "element_category": "security",
        "priority_score": Decimal("0.85"),
        "enforcement_level": "required",
        "applies_to": '["python", "web"]',
        "tags": '{"k": [1, 2]}',
        "updated_at": Decimal("1752928205.000000"),
        "title": "Validate input",
    }
    base.update(overrides)
    return base


def test_element_has_the_primer_servers_shape() -> None:
    assert element_from_row(row()) == {
        "element_id": "c1",
        "category": "security",
        "title": "Validate input",
        "content": "Always validate input",
        "priority_score": 0.85,
        "enforcement_level": "required",
        "source_document": "security.md",
        "section_path": "/input",
        "applies_to": ["python", "web"],
        "tags": {"k": [1, 2]},
        "last_updated": "2025-07-19T12:30:05Z",
        "realm_id": "GLOBAL",
    }


def test_json_columns_null_and_invalid() -> None:
    element = element_from_row(row(applies_to=None, tags="not json", title=None))
    assert element["applies_to"] == []
    assert element["tags"] == "not json"
    assert element["title"] is None
    assert element_from_row(row(applies_to=b'["x"]'))["applies_to"] == ["x"]


def test_null_priority_and_naive_datetime() -> None:
    element = element_from_row(row(priority_score=None, updated_at=datetime(2025, 1, 2, 3, 4, 5)))
    assert element["priority_score"] is None
    assert element["last_updated"] == "2025-01-02T03:04:05Z"


def test_response_fields_and_order() -> None:
    query = Query(("security", "process"), 0.5, "required", limit=10)
    rows = [row(chunk_id="b"), row(chunk_id="a")]
    response = build_response(query, rows, NOW)
    assert [e["element_id"] for e in response["global_elements"]] == ["b", "a"]
    assert {k: v for k, v in response.items() if k != "global_elements"} == {
        "success": True,
        "total_count": 2,
        "categories_included": ["process", "security"],
        "priority_threshold": 0.5,
        "enforcement_level": "required",
        "format": "structured",
        "retrieved_at": "2025-07-19T12:30:05.123456Z",
    }


def test_encoding_is_compact_json_then_zlib() -> None:
    response = build_response(Query(), [row()], NOW)
    plain = encode(response, compression=False)
    assert plain == json.dumps(response, separators=(",", ":"), ensure_ascii=False).encode()
    packed = encode(response, compression=True)
    assert zlib.decompress(packed) == plain
    assert decode(plain) == decode(packed) == response


@pytest.mark.parametrize("value", [b"", b"garbage", zlib.compress(b"[1]"), b"{not json"])
def test_decode_rejects_what_is_not_a_response(value: bytes) -> None:
    with pytest.raises(ValueError):
        decode(value)


def test_comparable_ignores_retrieval_time_and_ignored_columns() -> None:
    a = build_response(Query(), [row()], NOW)
    b = build_response(Query(), [row(updated_at=Decimal(1))], datetime(2030, 1, 1, tzinfo=UTC))
    assert comparable(a) != comparable(b)
    assert comparable(a, {"updated_at"}) == comparable(b, {"updated_at"})
    c = build_response(Query(), [row(content="changed")], NOW)
    assert comparable(a, {"updated_at"}) != comparable(c, {"updated_at"})


text = st.text(max_size=40)
json_text = st.one_of(
    st.none(),
    st.lists(st.text(max_size=8), max_size=4).map(json.dumps),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(json.dumps),
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "chunk_id": st.text(min_size=1, max_size=12),
            "realm_id": st.just("GLOBAL"),
            "content": text,
            "source_document": text,
            "section_path": st.none() | text,
            "element_category": st.sampled_from(["security", "development", "process"]),
            "priority_score": st.none()
            | st.integers(0, 100).map(lambda n: Decimal(n) / Decimal(100)),
            "enforcement_level": st.none() | st.sampled_from(["required", "optional"]),
            "applies_to": json_text,
            "tags": json_text,
            "updated_at": st.none() | st.integers(0, 2**31).map(Decimal),
            "title": st.none() | text,
        }
    ),
    max_size=8,
)
queries = st.builds(
    Query,
    categories=st.lists(st.sampled_from(["security", "process"]), max_size=2).map(tuple),
    priority_threshold=st.integers(0, 100).map(lambda n: n / 100),
    enforcement_level=st.sampled_from(["all", "required"]),
    limit=st.integers(1, 500),
)


@given(queries, rows, st.booleans())
def test_encode_decode_round_trip(query: Query, data: list[dict], compression: bool) -> None:
    response = build_response(query, data, NOW)
    assert decode(encode(response, compression=compression)) == response
