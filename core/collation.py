"""Text compared as the database compares it: under a column's collation, folded to the safe side.

The primer query filters `realm_id`, `element_category` and `enforcement_level` with `=` and
`IN`, so the database decides equality under each column's collation: MariaDB's utf8mb4
default (`utf8mb4_general_ci`) ignores case, accents and trailing spaces (PAD SPACE); MySQL 8's
(`utf8mb4_0900_ai_ci`) ignores case and accents (NO PAD). A change to an element stored as
`'Security'`, `'testing '` or in realm `'global'` affects the cached answers for `security`,
`testing` and every query. The predicate (core.predicate) therefore compares folded texts,
with a fold that makes equal at least everything the collation makes equal (deleting too
much is allowed, too little never):

- `bin` (`*_bin`, `binary`): code points compare; the fold drops trailing spaces (PAD SPACE;
  under NO PAD that only makes more things equal).
- `ci` (the root collations: `general`, `unicode`, `unicode_520`, `uca1400`, `0900`, with
  or without `nopad`, `ai`/`as`, `ci`/`cs`): for printable ASCII text, measured against the
  server for every collation of that kind (tests/test_collation.py), two texts compare equal
  exactly when they agree but for letter case and trailing spaces: the fold lower-cases and
  drops trailing spaces. Text with anything else in it (accents, `ß`, other scripts, control
  characters) is WILD: UCA's tables make `ß` equal `ss` (but `s` under `general_ci`), `ø`
  equal `o`, Greek iota subscripts vanish and Arabic digits equal ASCII ones, which no small fold
  reproduces exactly, so a wild text is taken to equal every text (a wild category is in
  every key's list; a wild level is every level; a wild realm is GLOBAL).
- `opaque` (any other collation: language tailorings such as `turkish_ci`, where `I` is not
  `i`, `roman_ci`, where `I` is `J`, `danish_ci`, where `aa` is `å`; an unknown name): every
  text is wild.

Folding happens once per image and once per distinct key filter, never per comparison; the
common texts (ASCII, already lower case, no trailing space) fold to themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple

WILD = "\x00*"  # a folded text that equals every text (no folded plain text holds \x00)
BIN, CI, OPAQUE = "bin", "ci", "opaque"
KINDS = (BIN, CI, OPAQUE)

_ROOT_CI = re.compile(
    r"^(utf8mb4|utf8mb3|utf8)_(general|general_mysql500|unicode|unicode_520|uca1400|0900)"
    r"(_nopad)?(_ai|_as)?_(ci|cs)$"
)
_BIN = re.compile(r"^(binary|[a-z0-9]+(_nopad)?_bin|utf8mb4_0900_bin)$")
_SPACES_BEFORE_JOIN = re.compile(r" +(?=_|$)")


def kind_of(collation: str | None) -> str:
    """The fold for a column of this collation (None: a column without one, e.g. numeric)."""
    name = (collation or "").lower()
    if _BIN.match(name):
        return BIN
    if _ROOT_CI.match(name):
        return CI
    return OPAQUE


@lru_cache(maxsize=65_536)
def fold(kind: str, text: str) -> str:
    """`text` folded for a column of `kind`: texts the column compares equal fold equal, or
    one of them folds to WILD."""
    if kind == BIN:
        return text.rstrip(" ")
    if kind == CI and text.isascii() and text.isprintable():
        return text.lower().rstrip(" ")
    return WILD


@lru_cache(maxsize=65_536)
def fold_cats(kind: str, cats: str) -> str:
    """A key's joined category list folded category by category: each `_`-aligned run loses
    its trailing spaces (runs are what core.predicate.category_listed reads as categories;
    a space before an inner `_` is dropped too, which only makes more runs equal). WILD when
    any part of it is."""
    if kind == BIN:
        return _SPACES_BEFORE_JOIN.sub("", cats)
    if kind == CI and cats.isascii() and cats.isprintable():
        return _SPACES_BEFORE_JOIN.sub("", cats.lower())
    return WILD


def fold_category(kind: str, category: str) -> str:
    """An element's category folded as fold_cats folds the runs of a key's list."""
    return fold_cats(kind, category)


class Collations(NamedTuple):
    """The fold kinds of the three compared columns of the chunks table."""

    realm: str = CI
    category: str = CI
    level: str = CI

    @classmethod
    def of(cls, names: Mapping[str, str | None]) -> Collations:
        """From the collation names by column (information_schema.COLUMNS); a column absent
        from `names` folds as an unknown collation would (opaque)."""
        return cls(
            realm=kind_of(names.get("realm_id", "?")),
            category=kind_of(names.get("element_category", "?")),
            level=kind_of(names.get("enforcement_level", "?")),
        )

    def to_json(self) -> dict[str, str]:
        return {"r": self.realm, "c": self.category, "l": self.level}

    @classmethod
    def from_json(cls, data: Any) -> Collations:
        """A batch's collations; a batch without them (an operator's) folds case-insensitively;
        a kind this code does not know folds as opaque."""
        if not isinstance(data, Mapping):
            return cls()
        return cls(*(_known(data.get(k, CI)) for k in ("r", "c", "l")))

    def widest(self, other: Collations) -> Collations:
        """Folds that make equal whatever either makes equal (a batch spanning a DDL)."""
        return Collations(*(_wider(a, b) for a, b in zip(self, other, strict=True)))


def _known(kind: Any) -> str:
    return kind if kind in KINDS else OPAQUE


def _wider(a: str, b: str) -> str:
    return a if KINDS.index(a) >= KINDS.index(b) else b


DEFAULT = Collations()  # MariaDB's and MySQL's defaults fold this way (and batches without any)
