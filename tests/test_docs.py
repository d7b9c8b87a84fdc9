"""The manual stays true: docs/configuration.md lists exactly the settings the code accepts,
and every relative link in the docs leads to a file (and heading) that exists. No services."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from config.toml_file import toml_keys

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOC = ROOT / "docs" / "configuration.md"
ENV_NAME = re.compile(r"(?:PRIMER|MEGAMIND)_[A-Z0-9_]+")
TICKED = re.compile(r"`([^`]+)`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _doc_files() -> list[Path]:
    named = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "client" / "README.md"]
    named.append(ROOT / "bench" / "RESULTS.md")
    return named + sorted((ROOT / "docs").glob("*.md"))


def _prose(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks (a link in a code sample is not a link)."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _tables(path: Path) -> list[list[dict[str, str]]]:
    """Every Markdown table in `path`, as rows keyed by the header's cells."""
    tables: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    for line in [*_prose(path), ""]:
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            tables.append([])
        elif not all(set(cell) <= set("-: ") for cell in cells):
            tables[-1].append(dict(zip(header, cells, strict=False)))
    return tables


def _column(table: list[dict[str, str]], name: str) -> set[str]:
    return {tick for row in table for tick in TICKED.findall(row.get(name, ""))}


def _settings_tables() -> list[list[dict[str, str]]]:
    tables = [t for t in _tables(CONFIG_DOC) if t and "TOML key" in t[0]]
    assert tables, f"{CONFIG_DOC} has no table with a 'TOML key' column"
    return tables


def _env_vars_in_config() -> set[str]:
    """Every environment variable the settings parser reads: the env-shaped string constants
    of the config package (they are read by name, some through a loop over a tuple)."""
    names: set[str] = set()
    for module in (ROOT / "config").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and ENV_NAME.fullmatch(value):
                names.add(value)
    return names


def test_every_toml_setting_is_documented_and_nothing_else() -> None:
    documented = set().union(*(_column(t, "TOML key") for t in _settings_tables()))
    accepted = set(toml_keys())
    missing, unknown = sorted(accepted - documented), sorted(documented - accepted)
    assert not missing, f"settings missing from {CONFIG_DOC.name}: {missing}"
    assert not unknown, f"{CONFIG_DOC.name} documents settings the code lacks: {unknown}"


def test_every_environment_variable_is_documented_and_nothing_else() -> None:
    documented = set().union(*(_column(t, "environment variable") for t in _settings_tables()))
    read = _env_vars_in_config()
    missing, unknown = sorted(read - documented), sorted(documented - read)
    assert not missing, f"variables missing from {CONFIG_DOC.name}: {missing}"
    assert not unknown, f"{CONFIG_DOC.name} documents variables config/ never reads: {unknown}"


def test_variables_read_elsewhere_exist() -> None:
    """The page's other table (variables read outside config/) names only real ones."""
    others = [t for t in _tables(CONFIG_DOC) if t and "read by" in t[0]]
    assert others, f"{CONFIG_DOC} has no table with a 'read by' column"
    source = "\n".join(
        path.read_text()
        for folder in ("tasks", "adapters", "worker", "cli", "reference_server", "client/src")
        for path in (ROOT / folder).rglob("*.py")
    )
    for name in _column(others[0], "variable"):
        assert f'"{name}"' in source, f"{name} is read by no module outside config/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path):
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            slug = _slug(match.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _broken_links(path: Path) -> list[str]:
    broken = []
    for line in _prose(path):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


@pytest.mark.parametrize("path", _doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert path.exists(), f"{path} is missing"
    assert _broken_links(path) == []


def test_slugs_follow_github() -> None:
    assert _slug("Refresh, not miss") == "refresh-not-miss"
    assert _slug("What `get` does") == "what-get-does"
    assert (
        _slug("A Redis ACL user for the primer server") == "a-redis-acl-user-for-the-primer-server"
    )
