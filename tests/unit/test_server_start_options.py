"""``orch server start`` with plain options is served without typer (``cli/main.py``): its options
must come out as typer parses them, and anything else must be left to typer."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.cli.main import server_start_options

SERVED_DIRECTLY = [
    ["server", "start"],
    ["server", "start", "--port", "4301"],
    ["server", "start", "--port=4301", "--host", "0.0.0.0"],
    ["server", "start", "--host=::1", "--processes", "2", "--port", "80"],
    ["server", "start", "--port", "1", "--port", "2"],  # the last one wins, as in typer
    ["server", "start", "--port", "007", "--host", ""],
    ["server", "start", "--port", "65535", "--processes", "1"],
]
LEFT_TO_TYPER = [
    [],
    ["server"],
    ["server", "migrate"],
    ["dev", "--port", "4301"],
    ["--version"],
    ["server", "start", "--help"],
    ["server", "start", "--port"],
    ["server", "start", "--port", "abc"],
    ["server", "start", "--port", "-1"],
    # numbers out of range: typer's usage error (exit 2), not serve()'s refusal
    ["server", "start", "--port", "0"],
    ["server", "start", "--port", "65536"],
    ["server", "start", "--port", "4301", "--port", "70000"],
    ["server", "start", "--processes", "0"],
    ["server", "start", "--processes", "100000"],  # above 4 per CPU: typer's usage error too
    ["server", "start", "--port", "+5"],
    ["server", "start", "--port", "٣"],  # a digit, but not one typer's int accepts as plain ASCII
    ["server", "start", "--port", "4301", "extra"],
    ["server", "start", "--prot", "4301"],
    ["server", "start", "--host", "--port", "4301"],
    ["server", "start", "-p", "4301"],
]


def typer_parse(argv: list[str]) -> dict[str, Any]:
    """What the Typer app's ``server start`` command is given for these arguments."""
    import typer.main

    from orchestrator.cli.commands import app

    start = typer.main.get_command(app).commands["server"].commands["start"]  # type: ignore[attr-defined]
    return start.make_context("start", list(argv[2:])).params


@pytest.mark.parametrize("argv", SERVED_DIRECTLY, ids=" ".join)
def test_plain_options_are_parsed_as_typer_parses_them(argv: list[str]) -> None:
    options = server_start_options(argv)
    assert options is not None
    assert {name: options.get(name) for name in ("host", "port", "processes")} == typer_parse(argv)


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=" ".join)
def test_anything_else_is_left_to_typer(argv: list[str]) -> None:
    assert server_start_options(argv) is None


def test_every_option_of_the_command_is_known() -> None:
    """An option added to ``orch server start`` must be parsed here too (or it would always go
    through typer, silently losing the direct start)."""
    import typer.main

    from orchestrator.cli.commands import app
    from orchestrator.cli.main import StartOptions

    start = typer.main.get_command(app).commands["server"].commands["start"]  # type: ignore[attr-defined]
    assert {opt for param in start.params for opt in param.opts if opt != "--help"} == {
        f"--{name}" for name in StartOptions.__annotations__}
