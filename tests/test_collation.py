"""Texts compared as the database compares them (core.collation, issue 22 seam 1): the
predicate deletes whenever the column's collation would match, never less.

The pure properties run over collation-equivalent spellings (case, trailing spaces, accents);
the oracle tests ask the private MariaDB itself whether two texts are equal under each
collation and hold the predicate to its answer.
"""

from __future__ import annotations

import collections
import unicodedata
from decimal import Decimal

import pymysql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.query import Query
from config.settings import DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE
from core.changes import element_image, in_global_realm
from core.collation import BIN, CI, DEFAULT, OPAQUE, WILD, Collations, fold, kind_of
from core.keys import KeyFilter, KeyFormat
from core.known_keys import KnownNames
from core.predicate import ChangeIndex, ElementImage, matches

KEYS = KeyFormat(DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE)
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10)
LEVELS = st.sampled_from(["required", "recommended", "optional"])
ACCENTS = "\u0301\u0300\u0308\u0302\u0327"  # acute, grave, diaeresis, circumflex, cedilla
ALL_KINDS = Collations(CI, CI, CI), Collations(OPAQUE, OPAQUE, OPAQUE)


@st.composite
def spelling(draw: st.DrawFn, word: str, accents: bool = True) -> str:
    """`word` as another row might store it and a case- and accent-insensitive, PAD SPACE
    collation still call it equal: any letter's case flipped, accents added, spaces after."""
    out = []
    for letter in word:
        if draw(st.booleans()):
            letter = letter.upper()
        if accents and draw(st.integers(0, 4)) == 0:
            letter = unicodedata.normalize("NFC", letter + draw(st.sampled_from(ACCENTS)))
        out.append(letter)
    return "".join(out) + " " * draw(st.integers(0, 3))


@st.composite
def equivalent(draw: st.DrawFn, accents: bool = True) -> tuple[str, str]:
    word = draw(WORDS)
    return draw(spelling(word, accents)), draw(spelling(word, accents))


@given(
    equivalent(),
    equivalent(accents=False),
    st.sampled_from(ALL_KINDS),
    st.decimals(0, 1, places=2),
    st.decimals(0, 1, places=2),
    st.lists(WORDS, max_size=3),
)
def test_equivalent_spellings_are_deleted(
    category: tuple[str, str],
    level_word: tuple[str, str],
    collations: Collations,
    priority: Decimal,
    threshold: Decimal,
    others: list[str],
) -> None:
    # Levels are an ENUM here (stored canonical), but a VARCHAR level compares like a category.
    stored_category, asked_category = category
    stored_level, asked_level = level_word
    image = ElementImage(stored_category, priority, stored_level)
    query = Query((asked_category, *others), float(threshold), asked_level)
    key = KEYS.parse(KEYS.build(query))
    assert key is not None
    if priority >= key.filter.threshold:  # the database's comparison matches
        assert matches(image, key.filter, collations)
        assert ChangeIndex([image], collations).affects(key.filter)


@given(st.sampled_from(["global", "GLOBAL ", "Global", "gLoBaL  "]))
def test_realm_equal_to_global_under_the_collation_is_global(realm: str) -> None:
    row = {
        "realm_id": realm,
        "element_category": "x",
        "priority_score": 1,
        "enforcement_level": None,
    }
    assert element_image(row) is not None
    assert element_image(row, OPAQUE) is not None
    assert not in_global_realm("GLOBAL_X") and not in_global_realm(None)
    assert in_global_realm("GLOBAL ", BIN) and not in_global_realm("global", BIN)


@given(st.lists(st.tuples(WORDS, WORDS), max_size=6), WORDS, st.sampled_from((CI, BIN, OPAQUE)))
def test_index_equals_brute_force_under_every_kind(
    pairs: list[tuple[str, str]], asked: str, kind: str
) -> None:
    collations = Collations(kind, kind, kind)
    images = [ElementImage(a.title() + " ", Decimal("0.5"), b) for a, b in pairs]
    for cats in (asked, asked.upper(), f"{asked}_zz", ""):
        key = KeyFilter(cats, Decimal("0.1"), "all")
        index = ChangeIndex(images, collations)
        assert index.affects(key) == any(matches(i, key, collations) for i in images)


def test_known_names_find_keys_a_folded_category_lists() -> None:
    security, testing = (KEYS.build(Query((c,))).encode() for c in ("security", "testing"))
    names = KnownNames(KEYS, 100).rebuilt([security, testing])
    index = ChangeIndex([ElementImage("Security ", Decimal(1), "required")], DEFAULT)
    assert names.affected(index.affects, index.categories) == [security]
    wild = ChangeIndex([ElementImage("sécurité", Decimal(1), "required")], DEFAULT)
    assert wild.categories is None and len(names.affected(wild.affects, wild.categories)) == 2


def test_collation_names_to_kinds() -> None:
    assert kind_of("utf8mb4_general_ci") == CI
    assert kind_of("utf8mb4_0900_ai_ci") == CI
    assert kind_of("utf8mb4_uca1400_nopad_as_cs") == CI
    assert kind_of("utf8mb4_bin") == BIN
    assert kind_of("utf8mb4_turkish_ci") == OPAQUE
    assert kind_of("latin1_swedish_ci") == OPAQUE
    assert kind_of(None) == OPAQUE
    assert fold(CI, "Caf\u00e9") == WILD
    assert Collations.from_json({"r": "bin", "c": "nonsense"}) == Collations(BIN, OPAQUE, CI)


# ---- the database as the oracle -------------------------------------------------------------

# Collations of each kind this MariaDB has: its default, the UCA ones (uca1400 NO PAD stands
# in for MySQL 8's utf8mb4_0900_ai_ci), binary ones, and tailorings the model calls opaque.
ORACLE = (
    "utf8mb4_general_ci",
    "utf8mb4_unicode_ci",
    "utf8mb4_unicode_520_ci",
    "utf8mb4_uca1400_ai_ci",
    "utf8mb4_uca1400_nopad_ai_ci",
    "utf8mb4_uca1400_as_cs",
    "utf8mb4_bin",
    "utf8mb4_nopad_bin",
    "utf8mb4_turkish_ci",
    "utf8mb4_roman_ci",
)
# Letters the collations treat in interesting ways, with case, accents, spaces and ignorables.
ALPHABET = "aAbIiJj\u0131YyuUvVsSßøoOéÉeEè _\u0301\u00a0\t\x01ﬁ٣3ᾳ\u03b1"


@pytest.fixture(scope="module")
def oracle(admin: pymysql.Connection) -> pymysql.cursors.Cursor:
    cur = admin.cursor()
    cur.execute("SET NAMES utf8mb4")
    return cur


def db_equal(cur: pymysql.cursors.Cursor, a: str, b: str, collation: str) -> bool:
    cur.execute(f"SELECT %s = %s COLLATE {collation}", (a, b))
    (equal,) = cur.fetchone()
    return bool(equal)


# Spellings a collation may call equal: each letter replaced by one of its look-alikes.
LOOKALIKES = {
    "a": "aAáÄ\u03b1",
    "s": "sSß",
    "i": "iI\u0131Íj",
    "o": "oOøÖ",
    "e": "eEéÈ",
    "u": "uUvü",
    "3": "3٣",
}


@st.composite
def oracle_pair(draw: st.DrawFn) -> tuple[str, str]:
    """A stored text and an asked one: random, or the stored one respelled with look-alikes,
    case flips, accents, trailing spaces and ignorables (so that the database often says equal)."""
    stored = draw(st.text(ALPHABET, max_size=5))
    if draw(st.booleans()):
        return stored, draw(st.text(ALPHABET, max_size=5))
    asked = "".join(draw(st.sampled_from(LOOKALIKES.get(c.lower(), c))) for c in stored)
    tail = draw(st.sampled_from(["", " ", "  ", "\x01", "\u00a0", "\u0301"]))
    return stored, asked + tail


@settings(max_examples=400)
@given(oracle_pair(), st.sampled_from(ORACLE))
def test_predicate_deletes_whenever_the_database_compares_equal(
    oracle: pymysql.cursors.Cursor, texts: tuple[str, str], collation: str
) -> None:
    stored, asked = texts
    if "_" in stored or "_" in asked:
        return  # `_` joins a key's categories: covered by the category tests
    kind = kind_of(collation)
    collations = Collations(kind, kind, kind)
    asked = asked.rstrip(" ") or "x"  # a key's category is never all spaces
    if db_equal(oracle, stored, asked, collation):
        image = ElementImage(stored, Decimal(1), stored)
        key = KeyFilter(asked, Decimal(0), asked)
        assert matches(image, key, collations), (stored, asked, collation)
        assert ChangeIndex([image], collations).affects(key)
    if db_equal(oracle, stored, "GLOBAL", collation):
        assert in_global_realm(stored, kind), (stored, collation)


@pytest.mark.parametrize(
    ("stored", "asked", "collation"),
    [
        ("Security", "security", "utf8mb4_general_ci"),
        ("testing ", "testing", "utf8mb4_general_ci"),
        ("sécurité", "securite", "utf8mb4_general_ci"),
        ("sécurité", "SECURITE", "utf8mb4_uca1400_nopad_ai_ci"),
        ("straße", "strasse", "utf8mb4_unicode_ci"),
        ("straße", "strase", "utf8mb4_general_ci"),
        ("Security", "security", "utf8mb4_roman_ci"),
    ],
)
def test_the_oracle_says_equal_and_so_does_the_predicate(
    oracle: pymysql.cursors.Cursor, stored: str, asked: str, collation: str
) -> None:
    """Pairs each collation calls equal (so the property above meets real matches)."""
    assert db_equal(oracle, stored, asked, collation)
    kind = kind_of(collation)
    collations = Collations(kind, kind, kind)
    assert matches(
        ElementImage(stored, Decimal(1), None), KeyFilter(asked, Decimal(0), "all"), collations
    )


def test_printable_ascii_compares_as_its_case_folded_text(oracle: pymysql.cursors.Cursor) -> None:
    """What the CI fold rests on, asked of every CI collation this server has: two printable
    ASCII letters compare equal exactly when they are one letter in two cases."""
    oracle.execute(
        "SELECT COLLATION_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY "
        "WHERE CHARACTER_SET_NAME = 'utf8mb4'"
    )
    names = sorted({row[0] for row in oracle.fetchall()} | set(ORACLE))
    modelled = [name for name in names if kind_of(name) == CI]
    assert "utf8mb4_general_ci" in modelled and "utf8mb4_uca1400_ai_ci" in modelled
    chars = [chr(i) for i in range(0x20, 0x7F)]
    for name in modelled:
        marks = ", ".join(f"HEX(WEIGHT_STRING(%s COLLATE {name}))" for _ in chars)
        oracle.execute(f"SELECT {marks}", chars)
        groups: dict[str, set[str]] = collections.defaultdict(set)
        for char, weight in zip(chars, oracle.fetchone(), strict=True):
            assert weight, f"{char!r} is ignorable under {name}"
            groups[weight].add(char)
        for group in groups.values():
            assert len({c.lower() for c in group}) == 1, f"{sorted(group)} equal under {name}"
