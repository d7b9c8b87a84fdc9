"""The primer query: the parameters a cached primer response is keyed by.

A value type shared by configuration (warm patterns) and the pure core (key format,
predicate). It lives here because `config` may depend on nothing else in the project.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ENFORCEMENT_LEVELS = ("required", "recommended", "optional")
ALL_LEVELS = "all"
SORT_ORDERS = ("priority_desc",)
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
# Characters that would make a key ambiguous or unsafe to build: the key separator, and
# glob metacharacters (keys are also matched by SCAN patterns).
FORBIDDEN_CATEGORY_CHARS = frozenset(":*?[]\\ \t\r\n")


@dataclass(frozen=True, slots=True)
class Query:
    """One primer query: `categories` empty means every category."""

    categories: tuple[str, ...] = ()
    priority_threshold: float = 0.0
    enforcement_level: str = ALL_LEVELS
    sort_by: str = "priority_desc"
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        # Categories are a set to the primer server: keep them sorted and unique so that
        # equal queries are equal values (and build the same key).
        object.__setattr__(self, "categories", tuple(sorted(set(self.categories))))
        object.__setattr__(self, "priority_threshold", float(self.priority_threshold))

    def problems(self) -> list[str]:
        """Every reason this query is not one the sidecar should warm or accept."""
        found = []
        for cat in self.categories:
            if not cat or any(ch in FORBIDDEN_CATEGORY_CHARS for ch in cat):
                found.append(
                    f"category {cat!r} is empty or contains one of ': * ? [ ] \\' or space"
                )
        thr = self.priority_threshold
        if math.isnan(thr) or not 0.0 <= thr <= 1.0:
            found.append(f"priority_threshold {thr!r} is outside 0..1")
        if self.enforcement_level not in (ALL_LEVELS, *ENFORCEMENT_LEVELS):
            found.append(
                f"enforcement_level {self.enforcement_level!r} is not one of "
                f"{', '.join((ALL_LEVELS, *ENFORCEMENT_LEVELS))}"
            )
        if self.sort_by not in SORT_ORDERS:
            found.append(f"sort_by {self.sort_by!r} is not one of {', '.join(SORT_ORDERS)}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            found.append(f"limit {self.limit!r} is not an integer")
        elif not 1 <= self.limit <= MAX_LIMIT:
            found.append(f"limit {self.limit!r} is outside 1..{MAX_LIMIT}")
        return found

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Query:
        """Build from the seed's parameter names (`include_categories`, …); defaults fill gaps.

        Raises ValueError naming every bad or unknown parameter.
        """
        known = {
            "include_categories",
            "priority_threshold",
            "enforcement_level",
            "sort_by",
            "limit",
        }
        errors = [f"unknown parameter {name!r}" for name in params if name not in known]
        cats = params.get("include_categories", ())
        if (
            isinstance(cats, str)
            or not isinstance(cats, Iterable)
            or not all(isinstance(c, str) for c in cats)
        ):
            errors.append(f"include_categories {cats!r} is not a list of strings")
            cats = ()
        thr = params.get("priority_threshold", 0.0)
        if isinstance(thr, bool) or not isinstance(thr, int | float):
            errors.append(f"priority_threshold {thr!r} is not a number")
            thr = 0.0
        query = cls(
            categories=tuple(cats),
            priority_threshold=thr,
            enforcement_level=params.get("enforcement_level", ALL_LEVELS),
            sort_by=params.get("sort_by", "priority_desc"),
            limit=params.get("limit", DEFAULT_LIMIT),
        )
        errors.extend(query.problems())
        if errors:
            raise ValueError("; ".join(errors))
        return query

    def to_params(self) -> dict[str, Any]:
        """The seed's parameter names, JSON-serialisable (Celery task arguments)."""
        return {
            "include_categories": list(self.categories),
            "priority_threshold": self.priority_threshold,
            "enforcement_level": self.enforcement_level,
            "sort_by": self.sort_by,
            "limit": self.limit,
        }


# The seed's CACHE_WARMING_PATTERNS, missing fields filled with the key defaults.
SEED_WARM_PATTERNS = (
    Query(categories=("security",), enforcement_level="required"),
    Query(categories=("development",), priority_threshold=0.8),
    Query(categories=("process",), enforcement_level="required"),
)
