"""Which cached keys a change affects (DESIGN §2), exactly.

A key is affected when the before or the after image of a changed element would appear
among the key's filter matches: realm GLOBAL, category in the key's list (any when the
list is empty), priority >= threshold, level equal (any when "all"). Sort and limit are
ignored: a change can move an element into or out of the top N only if it matches.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

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


def matches(image: ElementImage, key: KeyFilter) -> bool:
    """The brute-force predicate: would `image` be among `key`'s filter matches?"""
    if key.cats and (image.category is None or not category_listed(image.category, key.cats)):
        return False
    if image.level != ANY_LEVEL and key.level != "all" and image.level != key.level:
        return False
    return image.effective_priority >= key.threshold


@dataclass(slots=True)
class _Group:
    """Maximum priorities of a set of images, overall and per level."""

    top: Decimal | None = None
    by_level: dict[str | None, Decimal] = field(default_factory=dict)

    def add(self, image: ElementImage) -> None:
        prio = image.effective_priority
        if self.top is None or prio > self.top:
            self.top = prio
        current = self.by_level.get(image.level)
        if current is None or prio > current:
            self.by_level[image.level] = prio

    def reaches(self, key: KeyFilter) -> bool:
        if key.level == "all":
            return self.top is not None and self.top >= key.threshold
        for level in (key.level, ANY_LEVEL):
            prio = self.by_level.get(level)
            if prio is not None and prio >= key.threshold:
                return True
        return False


class ChangeIndex:
    """Every image of a batch, indexed so one key is checked in O(categories of the batch).

    `affects(key)` equals `any(matches(image, key) for image in images)`.
    """

    def __init__(self, images: Iterable[ElementImage]) -> None:
        self._every = _Group()
        self._by_category: dict[str, _Group] = {}
        self.size = 0
        for image in images:
            self.size += 1
            self._every.add(image)
            if image.category is not None:
                self._by_category.setdefault(image.category, _Group()).add(image)

    def __bool__(self) -> bool:
        return self.size > 0

    @property
    def categories(self) -> Collection[str]:
        """The images' categories: `affects` holds for a key that lists categories only when
        it lists one of these."""
        return self._by_category.keys()

    def affects(self, key: KeyFilter) -> bool:
        if not key.cats:
            return self._every.reaches(key)
        cats = key.cats
        if "_" not in cats:
            group = self._by_category.get(cats)
            return group is not None and group.reaches(key)
        return any(
            group.reaches(key)
            for category, group in self._by_category.items()
            if category_listed(category, cats)
        )
