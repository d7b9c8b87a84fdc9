"""The TOML file named by PRIMER_CONFIG: read, and each value checked against its group's
declaration (config.groups); every problem names the key as the file spells it."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from config.groups import TOML_GROUPS, toml_checks
from config.keyspace import check_key_layout
from config.replicas import REPLICA_KEYS

# Sections: the groups' and [replicas] (read with PRIMER_REPLICA_URLS by config.replicas).
SECTIONS = (*TOML_GROUPS, "replicas")

# What the file says: section -> {key: checked value}; "replicas" holds its raw table.
Document = dict[str, Any]


def toml_keys() -> list[str]:
    """Every `section.key` the TOML file accepts, from the tables the parser itself uses."""
    keys = {
        f"{section}.{key}" for section, group in TOML_GROUPS.items() for key in toml_checks(group)
    }
    keys |= {f"replicas.{key}" for key in REPLICA_KEYS}
    return sorted(keys)


def read_toml(path: str, problems: list[str]) -> Document:
    """The checked settings of the file at `path` (empty when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        problems.append(f"PRIMER_CONFIG {path!r} cannot be read: {exc.strerror}")
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(
            f"PRIMER_CONFIG {path!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start}): save it as UTF-8"
        )
        return {}
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"PRIMER_CONFIG {path!r} is not valid TOML: {exc}")
        return {}
    return parse_document(doc, problems)


def parse_document(doc: Mapping[str, Any], problems: list[str]) -> Document:
    """Check a parsed TOML document section by section, appending every problem found."""
    values: Document = {}
    for section, body in doc.items():
        if section not in SECTIONS:
            problems.append(f"unknown section [{section}] (known: {', '.join(sorted(SECTIONS))})")
        elif not isinstance(body, dict):
            problems.append(f"[{section}] is not a table")
        elif section == "replicas":
            values["replicas"] = body  # parsed with PRIMER_REPLICA_URLS by config.replicas
        else:
            values[section] = _section(section, body, problems)
    check_key_layout(values.get("cache", {}), problems)
    return values


def _section(section: str, body: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    known = toml_checks(TOML_GROUPS[section])
    values = {}
    for key, value in body.items():
        name = f"{section}.{key}"
        if key not in known:
            problems.append(f"unknown setting {name}")
        else:
            values[key] = known[key](name, value, problems)
    return values
