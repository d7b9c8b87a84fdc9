"""SQL reads of elements' current images (metadata changes and operator invalidations)."""

from __future__ import annotations

from collections.abc import Iterable

import pymysql
from pymysql.cursors import DictCursor

from config import Settings
from core.changes import element_image
from core.collation import CI
from core.predicate import ElementImage

_IMAGE_COLUMNS = "c.chunk_id, c.realm_id, c.element_category, c.priority_score, c.enforcement_level"


def chunk_images(
    conn: pymysql.Connection, settings: Settings, chunk_ids: Iterable[str], realm: str = CI
) -> list[ElementImage]:
    """Current images of the given chunks (absent or non-GLOBAL chunks give none: their own
    row events carry the images that matter); `realm`: realm_id's fold kind."""
    ids = sorted(set(chunk_ids))
    images: list[ElementImage] = []
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ", ".join(["%s"] * len(part))
        table = settings.tables.chunks
        sql = f"SELECT {_IMAGE_COLUMNS} FROM `{table}` c WHERE c.chunk_id IN ({marks})"
        with conn.cursor(DictCursor) as cur:
            cur.execute(sql, part)
            images.extend(image for row in cur.fetchall() if (image := element_image(row, realm)))
    return images


def element_images(
    conn: pymysql.Connection, settings: Settings, ident: str
) -> list[ElementImage] | None:
    """Images for an operator's `--element ID`: a chunk_id or a global element_id.
    None when neither exists."""
    sql = (
        f"SELECT {_IMAGE_COLUMNS} FROM `{settings.tables.chunks}` c "
        f"LEFT JOIN `{settings.tables.global_elements}` ge ON ge.chunk_id = c.chunk_id "
        "WHERE c.chunk_id = %s OR ge.element_id = %s"
    )
    with conn.cursor(DictCursor) as cur:
        cur.execute(sql, (ident, ident))
        rows = cur.fetchall()
    if not rows:
        return None
    return [image for row in rows if (image := element_image(row))]
