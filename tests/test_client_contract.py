"""The client library owns the wire contract; the sidecar uses the same code, not a copy.

Identity checks catch a second copy of the key format, value format or function library that
would drift; the source scan catches one written anew elsewhere in the sidecar. PrimerQuery's
validation and its keys (the seed's generate_cache_key under the prefix) are unit and property
tested here.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import primer_cache_client.functions as client_functions
import primer_cache_client.keys as client_keys
import primer_cache_client.values as client_values
import pytest
from hypothesis import given
from hypothesis import strategies as st
from primer_cache_client import PrimerCache, PrimerQuery
from primer_cache_client.query import FIELDS

import adapters.redis.lease_library
import config.settings
import core.keys
import core.response
from config.query import Query

ROOT = Path(__file__).resolve().parent.parent


def seed_generate_cache_key(params: dict) -> str:
    """The seed's function, verbatim."""
    key_parts = [
        "primer",
        "_".join(sorted(params.get("include_categories", []))),
        str(params.get("priority_threshold", 0.0)),
        params.get("enforcement_level", "all"),
        params.get("sort_by", "priority_desc"),
        str(params.get("limit", 100)),
    ]
    return ":".join(key_parts)


def test_the_sidecar_builds_keys_and_values_with_the_clients_code() -> None:
    for name in ("escape_glob", "hash_tag", "slot_text", "tagged", "untag", "lease_key"):
        assert getattr(core.keys, name) is getattr(client_keys, name), name
    assert core.keys.leased_key is client_keys.leased_key
    assert issubclass(core.keys.KeyFormat, client_keys.KeyFormat)
    for method in ("build", "key", "fields", "filter_fields", "filter_text", "classify"):
        assert getattr(core.keys.KeyFormat, method) is getattr(client_keys.KeyFormat, method)
    assert core.response.encode is client_values.encode
    assert core.response.decode is client_values.decode
    assert adapters.redis.lease_library.LIBRARY is client_functions.LIBRARY
    assert adapters.redis.lease_library.READ == client_functions.READ
    assert adapters.redis.lease_library.Answer is client_functions.Answer
    assert config.settings.LEASE_PREFIX is client_keys.LEASE_PREFIX
    assert config.settings.DEFAULT_KEY_TEMPLATE is client_keys.DEFAULT_KEY_TEMPLATE
    assert config.settings.DEFAULT_KEY_PREFIX is client_keys.DEFAULT_KEY_PREFIX


def test_no_second_copy_of_the_wire_code_in_the_sidecar() -> None:
    """Writing the value format, the key template or the Lua library anew anywhere in the
    sidecar's packages would make two copies that can drift."""
    markers = {
        "zlib.compress(": "the value format",
        "redis.register_function": "the function library",
        '"primer:{cats}': "the key template",
        "LEASE_PREFIX = ": "the lease prefix",
    }
    found = []
    for package in ("config", "core", "adapters", "worker", "tasks", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            found += [
                f"{path.relative_to(ROOT)}: {what}" for m, what in markers.items() if m in text
            ]
    assert found == []


def test_default_key_is_the_seeds_under_the_prefix() -> None:
    params = {"include_categories": ["security", "development"], "priority_threshold": 0.8,
              "enforcement_level": "required", "sort_by": "priority_desc", "limit": 50}  # fmt: skip
    q = PrimerQuery.from_arguments(**params)
    assert q.key("megamind:primer:") == "megamind:primer:" + seed_generate_cache_key(params)
    assert q.key("") == seed_generate_cache_key(params)
    assert PrimerQuery().key("p:") == "p:" + seed_generate_cache_key({})


categories = st.lists(st.sampled_from(["security", "development", "process", "a_b", "x"]),
                      max_size=4, unique=True)  # fmt: skip


@given(
    cats=categories,
    threshold=st.floats(min_value=0, max_value=1, allow_nan=False),
    level=st.sampled_from(["all", "required", "recommended", "optional"]),
    limit=st.integers(min_value=1, max_value=500),
)
def test_client_and_sidecar_agree_on_every_key(
    cats: list[str], threshold: float, level: str, limit: int
) -> None:
    """The client's key equals the seed's, the sidecar's, and the sidecar parses it back."""
    q = PrimerQuery(tuple(cats), threshold, level, "priority_desc", limit)
    fmt = core.keys.KeyFormat("megamind:primer:", config.settings.DEFAULT_KEY_TEMPLATE)
    sidecar_query = Query(tuple(cats), threshold, level, "priority_desc", limit)
    key = q.key("megamind:primer:")
    assert key == fmt.build(sidecar_query)
    assert key == "megamind:primer:" + seed_generate_cache_key(q.to_arguments())
    parsed = fmt.parse(key)
    assert parsed is not None and parsed.limit == limit and parsed.filter.level == level
    if not any("_" in c for c in cats):
        assert parsed.query() == sidecar_query


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"include_categories": "security"}, "include_categories"),
        ({"include_categories": ["security", 3]}, "include_categories"),
        ({"include_categories": ["a:b"]}, "include_categories"),
        ({"priority_threshold": "0.5"}, "priority_threshold"),
        ({"priority_threshold": True}, "priority_threshold"),
        ({"priority_threshold": math.nan}, "priority_threshold"),
        ({"enforcement_level": "urgent"}, "enforcement_level"),
        ({"enforcement_level": 3}, "enforcement_level"),
        ({"sort_by": "a:b"}, "sort_by"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "100"}, "limit"),
        ({"limit": 10.0}, "limit"),
        ({"limit": True}, "limit"),
        ({"format": "markdown"}, "format"),
        ({"include_categoriez": ["security"]}, "include_categoriez"),
    ],
)
def test_bad_arguments_name_their_field(arguments: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}\b"):
        PrimerQuery.from_arguments(**arguments)


def test_defaults_and_normalisation() -> None:
    q = PrimerQuery(include_categories=["b", "a", "a"], enforcement_level=None, limit=500)
    assert q.include_categories == ("a", "b")
    assert q.enforcement_level == "all"
    assert q == PrimerQuery(include_categories=("a", "b"), priority_threshold=0, limit=500)
    assert q.key("p:") == "p:primer:a_b:0.0:all:priority_desc:500"


@given(st.dictionaries(st.text(max_size=8), st.integers(1, 500), max_size=3))
def test_unknown_fields_never_pass(arguments: dict) -> None:
    if set(arguments) - set(FIELDS):
        with pytest.raises(ValueError, match="unknown field"):
            PrimerQuery.from_arguments(**arguments)


def test_the_client_stands_alone() -> None:
    """Its only hard dependency is redis, and importing it pulls in none of the sidecar's
    packages, celery or the binlog library (run from outside the repository)."""
    meta = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert [re.split(r"[<>=\[ ]", d)[0] for d in meta["dependencies"]] == ["redis"]
    check = (
        "import sys, primer_cache_client\n"
        "from primer_cache_client import PrimerCache, AsyncPrimerCache, PrimerQuery\n"
        "bad = {'config', 'core', 'adapters', 'worker', 'tasks', 'cli', 'celery', 'kombu',\n"
        "       'pymysqlreplication', 'pymysql', 'prometheus_client'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd="/", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"l1_size": 0}, "l1_size"),
        ({"ttl_s": "3600"}, "ttl_s"),
        ({"busy_wait_s": -1}, "busy_wait_s"),
        ({"prefix": "a{b"}, "prefix"),
        ({"l1_sise": 10}, "l1_sise"),
    ],
)
def test_bad_cache_options_name_their_field(options: dict, field: str) -> None:
    """Before any connection: the URL points nowhere."""
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}\b"):
        PrimerCache("redis://127.0.0.1:1/0", **options)
