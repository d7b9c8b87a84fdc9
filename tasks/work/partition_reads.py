"""What MySQL says of a partitioned table: its partitioning (information_schema) and the rows
in one partition."""

from __future__ import annotations

import pymysql

from core.partition_plan import Layout, PartitionError, Partitioning, PartitionRow


def read_partitioning(conn: pymysql.Connection, database: str, table: str) -> Partitioning:
    """The table's partitioning as information_schema shows it."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT PARTITION_NAME, SUBPARTITION_NAME, PARTITION_METHOD, PARTITION_EXPRESSION,"
            " PARTITION_DESCRIPTION, TABLE_ROWS FROM information_schema.PARTITIONS"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
            " ORDER BY PARTITION_ORDINAL_POSITION, SUBPARTITION_ORDINAL_POSITION",
            (database, table),
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (database, table),
        )
        columns = {str(name): str(kind).lower() for name, kind in cur.fetchall()}
    if not rows:
        raise PartitionError(f"table {database + '.' + table!r} does not exist")
    method, expression = rows[0][2], rows[0][3]
    partitions = tuple(
        PartitionRow(name, description, int(count or 0), sub)
        for name, sub, _, _, description, count in rows
        if name is not None
    )
    return Partitioning(table, method, expression, partitions, columns, database)


def partition_rows(conn: pymysql.Connection, layout: Layout, partition: str) -> int:
    # Exact, not TABLE_ROWS: InnoDB's estimate is often 0 for a partition just written to.
    with conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {_quoted_table(layout)} PARTITION ({_quote(partition)})")
        (count,) = cur.fetchone()
    return int(count)


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def _quoted_table(layout: Layout) -> str:
    return f"{_quote(layout.schema)}.{_quote(layout.table)}"
