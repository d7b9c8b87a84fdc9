"""PrimerQuery: the parameters of one primer read, validated before any Redis call.

The fields are the seed's and the MegaMind tool's names. A bad value raises ValueError naming
the field: the primer server turns it into its JSON-RPC "invalid params" error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from primer_cache_client.keys import DEFAULT_KEY_TEMPLATE, KeyFormat

ALL_LEVELS = "all"
ENFORCEMENT_LEVELS = ("required", "recommended", "optional")
DEFAULT_SORT = "priority_desc"
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
FIELDS = ("include_categories", "priority_threshold", "enforcement_level", "sort_by", "limit")
# Characters that would make a key ambiguous (the separator) or match more than itself in the
# sidecar's SCAN patterns (glob metacharacters); whitespace is never a category.
_FORBIDDEN = frozenset(":*?[]\\{} \t\r\n")

_formats: dict[tuple[str, str], KeyFormat] = {}


@dataclass(frozen=True, slots=True)
class PrimerQuery:
    """One primer query. `include_categories` empty means every category; `enforcement_level`
    None means "all". Categories are a set: equal sets give equal queries and one key."""

    include_categories: tuple[str, ...] = ()
    priority_threshold: float = 0.0
    enforcement_level: str | None = None
    sort_by: str = DEFAULT_SORT
    limit: int = DEFAULT_LIMIT
    _keys: dict[tuple[str, str], str] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        cats = self.include_categories
        if cats is None:
            cats = ()
        if isinstance(cats, str | bytes) or not isinstance(cats, Iterable):
            raise ValueError(f"include_categories: expected a list of strings, got {cats!r}")
        cats = tuple(cats)
        for cat in cats:
            if not isinstance(cat, str):
                raise ValueError(f"include_categories: {cat!r} is not a string")
            if not cat or any(ch in _FORBIDDEN for ch in cat):
                raise ValueError(
                    f"include_categories: {cat!r} is empty or holds one of : * ? [ ] \\ {{ }} "
                    "or whitespace"
                )
        object.__setattr__(self, "include_categories", tuple(sorted(set(cats))))

        thr = self.priority_threshold
        if isinstance(thr, bool) or not isinstance(thr, int | float) or not math.isfinite(thr):
            raise ValueError(f"priority_threshold: expected a finite number, got {thr!r}")
        object.__setattr__(self, "priority_threshold", float(thr))

        level = self.enforcement_level
        if level is None:
            level = ALL_LEVELS
        if level not in (ALL_LEVELS, *ENFORCEMENT_LEVELS):
            raise ValueError(
                f"enforcement_level: expected None or one of "
                f"{', '.join((ALL_LEVELS, *ENFORCEMENT_LEVELS))}, got {level!r}"
            )
        object.__setattr__(self, "enforcement_level", level)

        if not isinstance(self.sort_by, str) or not self.sort_by.isidentifier():
            raise ValueError(f"sort_by: expected a name like 'priority_desc', got {self.sort_by!r}")

        limit = self.limit
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise ValueError(f"limit: expected an integer, got {limit!r}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: {limit} is outside 1..{MAX_LIMIT}")

    @classmethod
    def from_arguments(cls, **arguments: Any) -> PrimerQuery:
        """From the tool's keyword arguments; ValueError naming an unknown one."""
        unknown = sorted(name for name in arguments if name not in FIELDS)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field (known: {', '.join(FIELDS)})")
        return cls(**arguments)

    @classmethod
    def from_mapping(cls, arguments: Mapping[str, Any]) -> PrimerQuery:
        return cls.from_arguments(**dict(arguments))

    @property
    def categories(self) -> tuple[str, ...]:
        """The key format's name for include_categories (keys.KeyParams)."""
        return self.include_categories

    def key(self, prefix: str, template: str = DEFAULT_KEY_TEMPLATE) -> str:
        """The seed's generate_cache_key under `prefix` (memoised per query)."""
        memo = (prefix, template)
        key = self._keys.get(memo)
        if key is None:
            fmt = _formats.get(memo)
            if fmt is None:
                fmt = _formats.setdefault(memo, KeyFormat(prefix, template))
            key = self._keys[memo] = fmt.build(self)  # type: ignore[arg-type]
        return key

    def to_arguments(self) -> dict[str, Any]:
        return {
            "include_categories": list(self.include_categories),
            "priority_threshold": self.priority_threshold,
            "enforcement_level": self.enforcement_level,
            "sort_by": self.sort_by,
            "limit": self.limit,
        }
