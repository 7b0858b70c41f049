"""The command line of a command ``cli/main.py`` serves without typer (``server start``, ``worker
start``), read as option/value pairs. Standard library only: imported for every ``orch`` command."""

from __future__ import annotations


def option_values(args: list[str]) -> list[tuple[str, str]] | None:
    """``args`` as ``(option, value)`` pairs, in order: ``--opt value``, ``--opt=value``, ``-o value``;
    None when a value is missing or starts with ``-``, or for ``-o=value`` (typer's value would be
    ``=value``): such a line is left to typer, which judges it."""
    pairs: list[tuple[str, str]] = []
    rest = args
    while rest:
        option, equals, value = rest[0].partition("=")
        if equals and not option.startswith("--"):
            return None
        if not equals:
            if len(rest) < 2 or rest[1].startswith("-"):
                return None
            value, rest = rest[1], rest[2:]
        else:
            rest = rest[1:]
        pairs.append((option, value))
    return pairs
