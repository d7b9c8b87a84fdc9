"""Row images to changes: the listener's pure step (no I/O).

A row event of a watched table becomes a RowChange: the element images the change can
affect keys through (before and after, GLOBAL only), and for the metadata table the chunk
ids whose current images must be looked up when the change is processed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from core.collation import CI, WILD, fold
from core.predicate import ElementImage

GLOBAL_REALM = "GLOBAL"
CHUNKS = "chunks"
ELEMENTS = "elements"


class OddRowError(ValueError):
    """Raised when a row image lacks a column the sidecar needs or holds a value it cannot read."""


@dataclass(frozen=True, slots=True)
class RowChange:
    images: tuple[ElementImage, ...] = ()
    chunk_refs: tuple[str, ...] = ()
    chunk_ids: tuple[str, ...] = ()  # the changed chunk rows (the commit-visibility barrier)

    def __bool__(self) -> bool:
        return bool(self.images or self.chunk_refs)


Row = Mapping[str, Any]


def changed_columns(before: Row, after: Row) -> set[str]:
    """Columns whose values differ. A column present in one image only (binlog_row_image
    NOBLOB leaves unchanged TEXT/JSON out of the after image) counts as changed."""
    changed = {name for name in before.keys() & after.keys() if before[name] != after[name]}
    return changed | (before.keys() ^ after.keys())


def visible_change(before: Row, after: Row, ignored: Collection[str]) -> bool:
    """Whether a column outside `ignored` changed (`changed_columns - ignored` is non-empty,
    without building the sets: this runs for every updated row)."""
    for name, value in after.items():
        if name not in ignored and (name not in before or before[name] != value):
            return True
    return any(name not in ignored and name not in after for name in before)


def row_change(
    role: str,
    before: Row | None,
    after: Row | None,
    ignored: Collection[str],
    *,
    visible: bool | None = None,
    realm: str = CI,
) -> RowChange | None:
    """The change one row event makes: `role` is CHUNKS or ELEMENTS; `before` is None for an
    insert, `after` None for a delete. None when the change cannot affect any cached key.
    `visible`: whether a column outside `ignored` changed, when the caller knows already
    (the row decoder compares the columns it does not decode as bytes); None: judge here.
    `realm`: the fold kind of realm_id's collation (core.collation)."""
    if before is not None and after is not None:
        if visible is None:
            visible = visible_change(before, after, ignored)
        if not visible:
            return None  # e.g. the primer server bumping access_count on a read
    rows = [row for row in (before, after) if row is not None]
    if role == ELEMENTS:
        refs = tuple(dict.fromkeys(str(_required(row, "chunk_id")) for row in rows))
        return RowChange(chunk_refs=refs)
    images = tuple(dict.fromkeys(image for row in rows if (image := element_image(row, realm))))
    if not images:
        return None
    ids = tuple(dict.fromkeys(str(_required(row, "chunk_id")) for row in rows))
    return RowChange(images=images, chunk_ids=ids)


def element_image(row: Row, realm: str = CI) -> ElementImage | None:
    """The row's image as a key filter sees it (its texts as stored: the predicate folds
    them), or None when it is outside realm GLOBAL as realm_id's collation (fold kind
    `realm`) compares: `'global'` and `'GLOBAL '` are GLOBAL under the default one."""
    if not in_global_realm(_required(row, "realm_id"), realm):
        return None
    category = row.get("element_category")
    level = row.get("enforcement_level")
    if category is not None and not isinstance(category, str):
        raise OddRowError(f"element_category {category!r} is not text")
    if level is not None and not isinstance(level, str):
        raise OddRowError(
            f"enforcement_level {level!r} is not text (is binlog_row_metadata=FULL set?)"
        )
    return ElementImage(
        category=category, priority=_priority(row.get("priority_score")), level=level
    )


def in_global_realm(value: Any, realm: str = CI) -> bool:
    """Whether a realm_id compares equal to 'GLOBAL' (fold kind `realm`; a value that is
    not text counts as GLOBAL: the safe side)."""
    if value == GLOBAL_REALM:
        return True  # nearly every row: no fold
    if value is None:
        return False  # NULL = 'GLOBAL' is not true
    if not isinstance(value, str):
        return True
    folded = fold(realm, value)
    return folded == WILD or folded == fold(realm, GLOBAL_REALM)


def _priority(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise OddRowError(f"priority_score {value!r} is not a number")
    try:
        priority = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise OddRowError(f"priority_score {value!r} is not a number") from None
    if not priority.is_finite():
        raise OddRowError(f"priority_score {value!r} is not a finite number")
    return priority


def _required(row: Row, column: str) -> Any:
    if column not in row:
        raise OddRowError(f"row image has no column {column!r} (columns: {sorted(row)})")
    return row[column]
