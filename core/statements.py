"""What a binlog QueryEvent's statement is, however it is prefixed. Pure.

A DDL statement reaches the binlog as the client sent it: behind comments (`/* migrate:42 */`,
`-- …`, `# …`), behind MariaDB's `SET STATEMENT var=value, … FOR`, or inside a versioned
comment (`/*!50001 … */`, MariaDB's `/*M!100101 … */`, whose text the server runs). The
listener must still see a TRUNCATE (it writes no row events) and flush. `leading_keyword`
skips all of those and returns the statement's first keyword; the listener flushes for every
statement that names a watched table and is not a transaction boundary, so a prefix this
module does not know costs a needless flush at worst, never a missed one.
"""

from __future__ import annotations

import re

# Statements that only delimit transactions: never a change to a table.
BOUNDARIES = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "XA", "SAVEPOINT", "RELEASE"})
DDL = frozenset({"TRUNCATE", "DROP", "ALTER", "RENAME", "CREATE OR REPLACE"})

_SKIP = re.compile(
    r"""
    \s+                              # whitespace
    | /\*(?!M?!) .*? (?:\*/|\Z)      # a comment (not a versioned one)
    | /\*M?!\d*                      # a versioned comment's opener: its text is run
    | \*/                            # ... and its closer
    | --[^\n]* | \#[^\n]*            # comments to the end of the line
    | ;                              # an empty statement
    | SET \s+ STATEMENT \b .*? \bFOR\b  # MariaDB's per-statement variables
    """,
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_KEYWORD = re.compile(r"([A-Za-z]+)(\s+OR\s+REPLACE\b)?")


_XA_BEGIN = re.compile(r"XA\s+(START|BEGIN)\b", re.IGNORECASE)


def _start(statement: str) -> int:
    """Where the statement proper starts, past every prefix."""
    pos, end = 0, len(statement)
    while pos < end:
        skipped = _SKIP.match(statement, pos)
        if skipped is None or skipped.end() == pos:
            break
        pos = skipped.end()
    return pos


def leading_keyword(statement: str) -> str:
    """The statement's first keyword, upper case (`CREATE OR REPLACE` as one); "" when none."""
    keyword = _KEYWORD.match(statement, _start(statement))
    if keyword is None:
        return ""
    word = keyword.group(1).upper()
    return f"{word} OR REPLACE" if keyword.group(2) else word


def is_boundary(statement: str) -> bool:
    """Whether the statement only begins or ends a transaction (BEGIN, COMMIT, XA …)."""
    return leading_keyword(statement) in BOUNDARIES


def opens_transaction(statement: str) -> bool:
    """Whether the statement begins a transaction whose row events follow (BEGIN, and the
    `XA START` of an XA transaction, which MariaDB binlogs at XA PREPARE)."""
    start = _start(statement)
    return leading_keyword(statement) == "BEGIN" or bool(_XA_BEGIN.match(statement, start))
