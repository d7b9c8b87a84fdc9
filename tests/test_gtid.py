"""core.gtid: whether a server holds a checkpoint (MariaDB domains, MySQL GTID sets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.gtid import GtidFormatError, lacking, mariadb_lacking, mysql_missing, parse_mysql

U1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
U2 = "4f22ab58-82db-22f2-af44-d91bb0530673"


def test_a_server_at_or_past_the_checkpoint_holds_it() -> None:
    assert mariadb_lacking("0-1-10", "0-1-10") == []
    assert mariadb_lacking("0-1-10", "0-2-15") == []  # promoted replica, writes since
    assert mariadb_lacking("0-1-10,1-5-3", "1-5-3,0-1-12,2-7-1") == []
    assert mariadb_lacking("", "0-1-3") == []


def test_a_server_behind_in_a_domain_lacks_it() -> None:
    (line,) = mariadb_lacking("0-1-10,1-5-3", "0-1-10,1-5-2")
    assert "domain 1" in line and "1-5-2" in line


def test_a_missing_domain_is_lacking() -> None:
    (line,) = mariadb_lacking("0-1-10,1-5-3", "0-1-11")
    assert "domain 1" in line


def test_the_same_number_from_another_server_is_a_diverged_history() -> None:
    (line,) = mariadb_lacking("0-1-10", "0-2-10")
    assert "diverged" in line


def test_bad_positions_raise() -> None:
    with pytest.raises(GtidFormatError):
        mariadb_lacking("0-1", "0-1-1")
    with pytest.raises(GtidFormatError):
        mysql_missing(f"{U1}:5-3", "")


def test_mysql_subset() -> None:
    assert mysql_missing(f"{U1}:1-10", f"{U1}:1-20,{U2}:1-5") == ""
    assert mysql_missing(f"{U1}:1-10:12", f"{U1}:1-11") == f"{U1}:12"
    assert mysql_missing(f"{U1}:1-10,{U2}:4", f"{U1}:1-5:7-10") == f"{U1}:6,{U2}:4"
    # gtid_executed as the server prints it: upper case allowed, newlines after commas
    assert mysql_missing(f"{U1}:1-3", f"{U1.upper()}:1-3,\n{U2}:1") == ""
    assert lacking(f"{U1}:1-3", f"{U1}:1-2", is_mariadb=False) != []
    assert lacking("0-1-3", "0-1-3", is_mariadb=True) == []


def test_tagged_gtids_keep_their_tag() -> None:
    assert parse_mysql(f"{U1}:1-3:tag:5") == {U1: [(1, 3)], f"{U1}:tag": [(5, 5)]}
    assert mysql_missing(f"{U1}:tag:5", f"{U1}:1-9") == f"{U1}:tag:5"


intervals = st.lists(
    st.tuples(st.integers(1, 60), st.integers(0, 6)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=5,
)
gtid_sets = st.dictionaries(st.sampled_from([U1, U2]), intervals, max_size=2)


def render(gset: dict[str, list[tuple[int, int]]]) -> str:
    parts = [
        f"{uuid}:" + ":".join(f"{a}-{b}" for a, b in ranges)
        for uuid, ranges in gset.items()
        if ranges
    ]
    return ",".join(parts)


def members(text: str) -> set[tuple[str, int]]:
    return {
        (u, n)
        for u, ranges in parse_mysql(text).items()
        for a, b in ranges
        for n in range(a, b + 1)
    }


@given(gtid_sets, gtid_sets)
def test_mysql_missing_is_set_difference(want: dict, have: dict) -> None:
    missing = mysql_missing(render(want), render(have))
    assert members(missing) == members(render(want)) - members(render(have))


@given(st.dictionaries(st.integers(0, 3), st.tuples(st.integers(1, 3), st.integers(1, 50))))
def test_a_server_holds_its_own_position(position: dict[int, tuple[int, int]]) -> None:
    text = ",".join(f"{d}-{s}-{n}" for d, (s, n) in position.items())
    assert mariadb_lacking(text, text) == []
