"""Statements recognised however they are prefixed (core.statements, issue 22 seam 2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.statements import BOUNDARIES, DDL, is_boundary, leading_keyword, opens_transaction

STATEMENTS = {
    "TRUNCATE": "TRUNCATE TABLE megamind_chunks",
    "DROP": "DROP TABLE IF EXISTS megamind_chunks",
    "ALTER": "alter table megamind_chunks add column x int",
    "RENAME": "RENAME TABLE megamind_chunks TO old_chunks",
    "CREATE OR REPLACE": "CREATE  OR\nREPLACE TABLE megamind_chunks (id int)",
    "BEGIN": "BEGIN",
    "COMMIT": "COMMIT",
    "XA": "XA COMMIT 'x'",
    "SAVEPOINT": "SAVEPOINT sp1",
}
comment_text = st.text(st.characters(exclude_characters="*\n\x00"), max_size=12)
# A plain comment's text: one that opens with "!" or "M!" makes a versioned comment, whose text
# the server runs as part of the statement (`/*!:*/ ALTER …` is not an ALTER); those have a
# test of their own below.
plain_comment_text = comment_text.filter(lambda text: not text.startswith(("!", "M!")))
prefixes = st.one_of(
    st.sampled_from([" ", "\n", "\t", ";", "  \n "]),
    plain_comment_text.map(lambda t: f"/*{t}*/"),
    comment_text.map(lambda t: f"-- {t}\n"),
    comment_text.map(lambda t: f"#{t}\n"),
    st.sampled_from(
        [
            "SET STATEMENT max_statement_time=60 FOR ",
            "set statement lock_wait_timeout = 5, sql_mode='' for ",
        ]
    ),
)


@given(st.sampled_from(sorted(STATEMENTS)), st.lists(prefixes, max_size=4))
def test_any_prefix_leaves_the_statement_recognised(keyword: str, before: list[str]) -> None:
    statement = "".join(before) + STATEMENTS[keyword]
    assert leading_keyword(statement) == keyword
    assert is_boundary(statement) == (keyword in BOUNDARIES)


@given(
    st.sampled_from(sorted(DDL)),
    st.sampled_from(["/*!", "/*!50001 ", "/*!40101 ", "/*M!", "/*M!100101 "]),
    st.lists(prefixes, max_size=2),
)
def test_versioned_comments_are_read_as_the_statement_they_hold(
    keyword: str, opener: str, before: list[str]
) -> None:
    statement = "".join(before) + opener + STATEMENTS[keyword] + " */"
    assert leading_keyword(statement) == keyword


@pytest.mark.parametrize(
    ("statement", "keyword"),
    [
        ("/* migrate:42 */ TRUNCATE TABLE megamind_chunks", "TRUNCATE"),
        ("SET STATEMENT max_statement_time=60 FOR TRUNCATE megamind_chunks", "TRUNCATE"),
        ("/*!50001 DROP VIEW IF EXISTS v */", "DROP"),
        ("", ""),
        ("/* never closed", ""),
        ("CREATE TABLE t (id int)", "CREATE"),
    ],
)
def test_examples(statement: str, keyword: str) -> None:
    assert leading_keyword(statement) == keyword


@pytest.mark.parametrize(
    ("statement", "opens"),
    [
        ("BEGIN", True),
        ("/* x */ BEGIN", True),
        ("XA START X'6162',X'',1", True),
        ("xa begin 'x'", True),
        ("XA END X'6162',X'',1", False),
        ("XA COMMIT 'x'", False),
        ("COMMIT", False),
    ],
)
def test_transactions_open_at_begin_and_xa_start(statement: str, opens: bool) -> None:
    assert opens_transaction(statement) == opens
