"""Every ``orch`` command and option says what it is for, and ``--help`` shows no Python types."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner


def _commands() -> Iterator[tuple[str, Any]]:
    """``("orch work-pool create", command)`` for every command and group of the Typer app."""
    import typer.main

    from orchestrator.cli.commands import app

    def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        yield path, command
        for name, sub in (getattr(command, "commands", None) or {}).items():
            yield from walk(sub, f"{path} {name}")

    yield from walk(typer.main.get_command(app), "orch")


COMMANDS = dict(_commands())


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_and_option_has_help(path: str) -> None:
    command = COMMANDS[path]
    problems = [] if (command.help or "").strip() else ["the command itself"]
    problems += [f"{p.param_type_name} {p.opts[0] if p.param_type_name == 'option' else p.name}"
                 for p in command.params if not (getattr(p, "help", None) or "").strip()]
    assert not problems, f"'{path}' has no help for: {', '.join(problems)}"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_shows_no_python_types_and_no_rest(path: str) -> None:
    from orchestrator.cli.commands import app

    result = CliRunner().invoke(app, [*path.split()[1:], "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    noise = re.findall(r"<(?:list\[\w+\]|bool|str|int|float|int range|float range)>|``", result.output)
    assert not noise, f"'{path} --help' shows {sorted(set(noise))}:\n{result.output}"


def test_version() -> None:
    from importlib.metadata import version

    from orchestrator.cli.commands import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"orchestrator {version('orchestrator')}\n"
