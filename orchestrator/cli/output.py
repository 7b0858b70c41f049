"""Shared CLI helpers: the API client, printing, and user-facing errors."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

PIPE_WIDTH = 100_000  # wider than any table: a table measured against it is never narrowed

def client() -> Any:
    from orchestrator.client import Client
    from orchestrator.settings import Settings

    return Client.from_settings(Settings())


def fail(message: str, code: int = 1) -> NoReturn:
    import typer  # here: ``cli/main.py`` uses this module's ``one_line`` on paths that never load typer

    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    print(json.dumps(data, indent=2, default=str))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A Rich table. On a terminal it fits the window (long cells fold); piped or redirected, every
    cell stays whole on one line, so ``grep`` and ``awk`` see full ids and names."""
    from rich.console import Console
    from rich.table import Table

    terminal = sys.stdout.isatty()
    t = Table(title=title)
    for column in columns:
        t.add_column(column, overflow="fold", no_wrap=not terminal)
    for row in rows:
        t.add_row(*(_cell(v) for v in row))
    # Rich assumes 80 columns when it cannot measure a terminal; give it all the room the table needs.
    (Console() if terminal else Console(width=PIPE_WIDTH)).print(t)


def _cell(value: Any) -> str:
    """A table cell: nothing for None, an instant as ISO 8601 to the second, like every time the CLI shows."""
    import datetime as dt  # here: ``cli/main.py`` imports this module on the server's and worker's start

    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def own_words(message: object) -> str:
    """A pydantic error message as its validator wrote it: without pydantic's "Value error, "."""
    return str(message).removeprefix("Value error, ")


def parse_key_values(pairs: list[str], option: str) -> dict[str, Any]:
    """``k=v`` pairs; each value is read as JSON when it parses (7 -> 7, true -> True), else text."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"{option} expects key=value, got {pair!r}")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


def parse_parameters(params: str | None, pairs: list[str]) -> dict[str, Any]:
    """``--params JSON`` overlaid with ``--param k=v`` pairs."""
    parameters: dict[str, Any] = {}
    if params is not None:
        try:
            parameters = json.loads(params)
        except ValueError as error:
            fail(f"--params is not valid JSON: {error}")
        if not isinstance(parameters, dict):
            fail("--params must be a JSON object")
    return {**parameters, **parse_key_values(pairs, "--param")}


def one_line(detail: object) -> str:
    """An error detail (text, or FastAPI-style validation errors) as one line for stderr."""
    if isinstance(detail, list):  # FastAPI-style validation errors
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                msg = own_words(item.get("msg", item))
                parts.append(msg if loc and msg.startswith("parameter") else f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)
