"""Label and name matching, the one set of rules for event filters (pages and the live stream) and
the triggers to come. Pure: no database, no I/O.

The rules (Prefect's, so a Prefect user's filters mean the same here):

* a pattern is a glob where ``*`` matches any run of characters (also none); every other character
  is literal (``?`` and ``[`` included: resource ids and event names contain dots and brackets,
  not wildcards), and matching is case-sensitive;
* a pattern starting with ``!`` matches what the rest does not match;
* a list of patterns matches when any of them does (OR): ``["!a", "!b"]`` therefore matches
  everything; to exclude several values, write one negated glob that covers them;
* a label the resource does not have never matches, not even a negated pattern; an empty list
  matches nothing;
* a label specification (``{key: pattern | [patterns]}``) matches when every key matches (AND).

``sql_glob`` builds the same test as SQL (``LIKE`` on PostgreSQL, ``GLOB`` on SQLite, both
case-sensitive), so that a filter narrowed in the database and one checked here agree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

NEGATION = "!"
WILDCARD = "*"

LabelSpec = Mapping[str, "str | Sequence[str]"]


@functools.lru_cache(maxsize=4096)
def _compiled(glob: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if part == WILDCARD else re.escape(part)
                              for part in re.split(r"(\*)", glob)), re.DOTALL)


def glob_matches(glob: str, text: str) -> bool:
    """``text`` matches ``glob`` (``*`` is the only wildcard)."""
    if WILDCARD not in glob:
        return glob == text
    return _compiled(glob).fullmatch(text) is not None


def pattern_matches(pattern: str, value: str | None) -> bool:
    """One pattern (a glob, negated by a leading ``!``) against a label's value; None (no such
    label) never matches."""
    if value is None:
        return False
    if pattern.startswith(NEGATION):
        return not glob_matches(pattern[1:], value)
    return glob_matches(pattern, value)


def any_matches(patterns: str | Sequence[str], value: str | None) -> bool:
    """A pattern or a list of them (OR) against a value."""
    if isinstance(patterns, str):
        return pattern_matches(patterns, value)
    return any(pattern_matches(pattern, value) for pattern in patterns)


def labels_match(spec: LabelSpec, labels: Mapping[str, str]) -> bool:
    """Every key of ``spec`` matches the label of that key (AND across keys)."""
    return all(any_matches(patterns, labels.get(key)) for key, patterns in spec.items())


def as_list(patterns: str | Sequence[str]) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


# --- the same test in SQL ---------------------------------------------------------------------


def _like(glob: str) -> str:
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace(WILDCARD, "%")


def _sqlite_glob(glob: str) -> str:
    # In SQLite's GLOB ``?`` and ``[`` are wildcards too: bracket them to make them literal.
    return "".join(f"[{c}]" if c in "?[" else c for c in glob)


def sql_glob(column: Any, glob: str, dialect: str) -> Any:
    """``column`` matches ``glob``, case-sensitive, as a SQLAlchemy expression. An exact value (no
    ``*``) is an equality, so that the column's index serves it."""
    if WILDCARD not in glob:
        return column == glob
    if dialect == "sqlite":  # LIKE is case-insensitive on SQLite; GLOB is not
        return column.op("GLOB", is_comparison=True)(_sqlite_glob(glob))
    return column.like(_like(glob), escape="\\")


def sql_pattern(column: Any, pattern: str, dialect: str) -> Any:
    """One pattern (``!`` negates) as SQL; a NULL value (a missing label) matches neither way."""
    if pattern.startswith(NEGATION):
        return column.is_not(None) & ~sql_glob(column, pattern[1:], dialect)
    return sql_glob(column, pattern, dialect)


def sql_any(column: Any, patterns: str | Sequence[str], dialect: str) -> Any:
    """Any of ``patterns`` (OR) as SQL; an empty list matches nothing."""
    from sqlalchemy import false, or_

    tests = [sql_pattern(column, pattern, dialect) for pattern in as_list(patterns)]
    return or_(*tests) if tests else false()


__all__ = [
    "LabelSpec",
    "any_matches",
    "as_list",
    "glob_matches",
    "labels_match",
    "pattern_matches",
    "sql_any",
    "sql_glob",
    "sql_pattern",
]
