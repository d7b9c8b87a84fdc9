"""The primer query, parameterised: the rows a cached primer response is built from (shared by
the tasks and the reference primer server, so a warm and a server fill build equal values).

Values always travel as parameters; only table names (validated identifiers from settings)
are formatted into the SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pymysql
from pymysql.cursors import DictCursor

from config import Settings
from config.query import ALL_LEVELS, Query
from core.response import build_response

GLOBAL_REALM = "GLOBAL"

# UNIX_TIMESTAMP: last_updated must not depend on the connection's time zone.
_COLUMNS = (
    "c.chunk_id, c.realm_id, c.content, c.source_document, c.section_path, "
    "c.element_category, c.priority_score, c.enforcement_level, c.applies_to, c.tags, "
    "UNIX_TIMESTAMP(c.updated_at) AS updated_at, ge.title"
)


def primer_sql(settings: Settings, query: Query) -> tuple[str, list[Any]]:
    """The SQL text and its parameters for `query`."""
    where = ["c.realm_id = %s", "c.element_category IS NOT NULL"]
    params: list[Any] = [GLOBAL_REALM]
    if query.categories:
        where.append(f"c.element_category IN ({', '.join(['%s'] * len(query.categories))})")
        params.extend(query.categories)
    # Decimal(repr(float)): DECIMAL columns compare exactly with the key's threshold text.
    where.append("c.priority_score >= %s")
    params.append(Decimal(repr(query.priority_threshold)))
    if query.enforcement_level != ALL_LEVELS:
        where.append("c.enforcement_level = %s")
        params.append(query.enforcement_level)
    # Deterministic order: ties broken by chunk_id. Never updated_at: the primer server's
    # read bumps change it, which would reorder responses without invalidating them.
    sql = (
        f"SELECT {_COLUMNS} FROM `{settings.tables.chunks}` c "
        f"LEFT JOIN `{settings.tables.global_elements}` ge ON ge.chunk_id = c.chunk_id "
        f"WHERE {' AND '.join(where)} "
        "ORDER BY c.priority_score DESC, c.created_at DESC, c.chunk_id "
        "LIMIT %s"
    )
    params.append(int(query.limit))
    return sql, params


def fetch_rows(conn: pymysql.Connection, settings: Settings, query: Query) -> list[dict]:
    sql, params = primer_sql(settings, query)
    with conn.cursor(DictCursor) as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def fresh_response(
    conn: pymysql.Connection, settings: Settings, query: Query, now: datetime | None = None
) -> dict:
    """What the primer server would answer for `query` right now."""
    rows = fetch_rows(conn, settings, query)
    return build_response(query, rows, now or datetime.now(UTC))
