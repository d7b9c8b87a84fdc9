"""The collations of the chunks table's compared columns, read from the table definition."""

from __future__ import annotations

import logging

import pymysql

from core.collation import OPAQUE, Collations

log = logging.getLogger(__name__)

COMPARED = ("realm_id", "element_category", "enforcement_level")


def read_collations(conn: pymysql.Connection, database: str, table: str) -> Collations:
    """How the primer query's `=`/`IN` compare realm, category and level: each column's
    collation from information_schema.COLUMNS (a column it does not show folds as opaque,
    the safe side). Logs a warning for a collation core.collation does not model."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND COLUMN_NAME IN (%s, %s, %s)",
            (database, table, *COMPARED),
        )
        names = {str(column).lower(): collation for column, collation in cur.fetchall()}
    collations = Collations.of(names)
    for column, kind in zip(COMPARED, collations, strict=True):
        if kind == OPAQUE:
            log.warning(
                "%s.%s.%s has collation %r, which the sidecar does not model: every change "
                "to a GLOBAL element is taken to match any %s (safe, but deletes more keys)",
                database,
                table,
                column,
                names.get(column),
                column,
            )
    return collations
