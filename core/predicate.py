"""Which cached keys a change affects, exactly: the primer query's filter, applied to the
changed element's images instead of the table.

A key is affected when the before or the after image of a changed element would appear
among the key's filter matches: realm GLOBAL, category in the key's list (any when the
list is empty), priority >= threshold, level equal (any when "all"). Sort and limit are
ignored: a change can move an element into or out of the top N only if it matches.

Texts compare as the database compares them, under each column's collation (core.collation):
both sides are folded, the images once when indexed, the keys once per distinct filter.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from core.collation import DEFAULT, WILD, Collations, fold, fold_category, fold_cats
from core.keys import KeyFilter

ANY_LEVEL = "*"  # an image that stands for every enforcement level (operator invalidations)
_ZERO = Decimal(0)
_ANY_PRIORITY = Decimal("Infinity")


class ElementImage(NamedTuple):
    """A GLOBAL element as a cached response's filter sees it (non-GLOBAL rows have none).

    A NamedTuple: two are made for every updated row the listener reads.
    """

    category: str | None
    priority: Decimal | None
    level: str | None

    @property
    def effective_priority(self) -> Decimal:
        # NULL priority: the seed's `>=` excludes it, but the primer server omits the
        # threshold filter at 0 and so includes it. Safe side: it matches thresholds <= 0.
        return _ZERO if self.priority is None else self.priority

    def to_json(self) -> dict[str, Any]:
        return {
            "c": self.category,
            "p": None if self.priority is None else str(self.priority),
            "l": self.level,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ElementImage:
        prio = data.get("p")
        return cls(data.get("c"), None if prio is None else Decimal(prio), data.get("l"))

    @classmethod
    def wildcard(cls, category: str) -> ElementImage:
        """Stands for any element of `category` at any priority and level."""
        return cls(category, _ANY_PRIORITY, ANY_LEVEL)


def category_listed(category: str, cats: str) -> bool:
    """Whether a key whose joined category text is `cats` may list `category`.

    Categories are joined with `_` and may contain `_`, so any `_`-aligned run counts.
    """
    if category not in cats:
        return False
    return (
        cats == category
        or cats.startswith(category + "_")
        or cats.endswith("_" + category)
        or ("_" + category + "_") in cats
    )


def matches(image: ElementImage, key: KeyFilter, collations: Collations = DEFAULT) -> bool:
    """The brute-force predicate: would `image` be among `key`'s filter matches, with texts
    compared under `collations`? (The reference ChangeIndex is held to.)"""
    if key.cats:
        cats = fold_cats(collations.category, key.cats)
        if image.category is None:
            return False
        category = fold_category(collations.category, image.category)
        if WILD not in (cats, category) and not category_listed(category, cats):
            return False
    level = key_level(key.level, collations)
    image_level = image_level_of(image.level, collations)
    if image_level != ANY_LEVEL and level is not None and image_level != level:
        return False
    return image.effective_priority >= key.threshold


def key_level(level: str, collations: Collations) -> str | None:
    """A key's level folded; None: any level ("all", or a level that folds to every one)."""
    if level == "all":
        return None
    folded = fold(collations.level, level)
    return None if folded in ("all", WILD) else folded


def image_level_of(level: str | None, collations: Collations) -> str | None:
    """An image's level folded; ANY_LEVEL: it stands for every level."""
    if level is None or level == ANY_LEVEL:
        return level
    folded = fold(collations.level, level)
    return ANY_LEVEL if folded == WILD else folded


@dataclass(slots=True)
class _Group:
    """Maximum priorities of a set of images, overall and per level."""

    top: Decimal | None = None
    by_level: dict[str | None, Decimal] = field(default_factory=dict)

    def add_folded(self, level: str | None, prio: Decimal) -> None:
        if self.top is None or prio > self.top:
            self.top = prio
        current = self.by_level.get(level)
        if current is None or prio > current:
            self.by_level[level] = prio

    def reaches(self, level: str | None, threshold: Decimal) -> bool:
        """Whether an image of the group is at `level` (None: any) and at or above `threshold`."""
        if level is None:
            return self.top is not None and self.top >= threshold
        for candidate in (level, ANY_LEVEL):
            prio = self.by_level.get(candidate)
            if prio is not None and prio >= threshold:
                return True
        return False


class ChangeIndex:
    """Every image of a batch, folded and indexed so one key is checked in O(categories of the
    batch). `affects(key)` equals `any(matches(image, key, collations) for image in images)`.
    """

    def __init__(self, images: Iterable[ElementImage], collations: Collations = DEFAULT) -> None:
        self.collations = collations
        self._every = _Group()  # every image
        self._listed = _Group()  # every image with a category (a key whose list is WILD)
        self._wild = _Group()  # images whose category folds to WILD (in every key's list)
        self._by_category: dict[str, _Group] = {}
        self.size = 0
        kind = collations.category
        for image in images:
            self.size += 1
            level = image_level_of(image.level, collations)
            prio = image.effective_priority
            self._every.add_folded(level, prio)
            if image.category is None:
                continue
            self._listed.add_folded(level, prio)
            category = fold_category(kind, image.category)
            group = self._wild if category == WILD else self._by_category.get(category)
            if group is None:
                group = self._by_category[category] = _Group()
            group.add_folded(level, prio)
        self._memo: dict[tuple[str, str], tuple[str | None, str | None]] = {}

    def __bool__(self) -> bool:
        return self.size > 0

    @property
    def categories(self) -> Collection[str] | None:
        """The images' folded categories: `affects` holds for a key that lists categories only
        when it lists one of these (as the collation compares). None: any key may be
        affected (an image's category is WILD)."""
        if self._wild.top is not None:
            return None
        return self._by_category.keys()

    def affects(self, key: KeyFilter) -> bool:
        folded = self._memo.get((key.cats, key.level))
        if folded is None:
            # None: the key lists every category (a list that folds to "" is not that)
            cats = fold_cats(self.collations.category, key.cats) if key.cats else None
            folded = self._memo[(key.cats, key.level)] = (
                cats,
                key_level(key.level, self.collations),
            )
        cats, level = folded
        threshold = key.threshold
        if cats is None:
            return self._every.reaches(level, threshold)
        if cats == WILD:
            return self._listed.reaches(level, threshold)
        if self._wild.reaches(level, threshold):
            return True
        if "_" not in cats:
            group = self._by_category.get(cats)
            return group is not None and group.reaches(level, threshold)
        return any(
            group.reaches(level, threshold)
            for category, group in self._by_category.items()
            if category_listed(category, cats)
        )
