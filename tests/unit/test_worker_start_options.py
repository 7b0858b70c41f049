"""``orch worker start`` with well-formed options is served without typer (``cli/main.py``,
``cli/worker_start.py``): its options must come out as typer parses them, and anything else must be
left to typer."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.cli.worker_start import WorkerStartOptions, expand_host, worker_start_options

SERVED_DIRECTLY = [
    ["worker", "start", "--pool", "p"],
    ["worker", "start", "-p", "p", "--limit", "8"],
    ["worker", "start", "--pool=p", "--type", "process", "--name", "w1"],
    ["worker", "start", "-t", "docker", "--pool", "p", "--limit=3", "--name=w"],
    ["worker", "start", "--pool", "p", "-q", "b", "--queue", "a", "--queue=c"],  # accumulated, in order
    ["worker", "start", "--pool", "a", "--pool", "b", "--limit", "2", "--limit", "5"],  # the last one wins
    ["worker", "start", "--pool", "", "--name", ""],  # empty values: start_worker refuses them itself
    ["worker", "start", "--pool", "p", "--limit", "007", "--type=k=v"],
]
LEFT_TO_TYPER = [
    [],
    ["worker"],
    ["worker", "ls", "--pool", "p"],
    ["worker", "check", "--pool", "p"],
    ["server", "start"],
    ["worker", "start"],  # --pool missing: typer says so
    ["worker", "start", "--limit", "2"],
    ["worker", "start", "--pool", "p", "--help"],
    ["worker", "start", "--pool"],
    ["worker", "start", "--pool", "p", "--limit", "0"],  # below the option's minimum
    ["worker", "start", "--pool", "p", "--limit", "-1"],
    ["worker", "start", "--pool", "p", "--limit", "10001"],  # above the option's maximum
    ["worker", "start", "--pool", "p", "--limit", "+5"],
    ["worker", "start", "--pool", "p", "--limit", "abc"],
    ["worker", "start", "--pool", "p", "--limit", "٣"],  # a digit, but not plain ASCII
    ["worker", "start", "--pool", "p", "extra"],
    ["worker", "start", "--pool", "p", "--"],
    ["worker", "start", "--pol", "p"],
    ["worker", "start", "-pp"],
    ["worker", "start", "-p=p"],
    ["worker", "start", "--pool", "--name", "w"],
    ["worker", "start", "--pool", "p", "-l", "2"],
]


def typer_parse(argv: list[str]) -> dict[str, Any]:
    """What the Typer app's ``worker start`` command is given for these arguments."""
    import typer.main

    from orchestrator.cli.commands import app

    start = typer.main.get_command(app).commands["worker"].commands["start"]  # type: ignore[attr-defined]
    params = dict(start.make_context("start", list(argv[2:])).params)
    params["queue"] = list(params["queue"] or [])
    return params


@pytest.mark.parametrize("argv", SERVED_DIRECTLY, ids=" ".join)
def test_well_formed_options_are_parsed_as_typer_parses_them(argv: list[str]) -> None:
    options = worker_start_options(argv)
    assert options is not None
    assert dict(options) == typer_parse(argv)


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=" ".join)
def test_anything_else_is_left_to_typer(argv: list[str]) -> None:
    assert worker_start_options(argv) is None


def test_every_option_of_the_command_is_known() -> None:
    """An option added to ``orch worker start`` must be parsed here too (or it would always go
    through typer, silently losing the direct start), under the same argument names."""
    import typer.main

    from orchestrator.cli.commands import app

    start = typer.main.get_command(app).commands["worker"].commands["start"]  # type: ignore[attr-defined]
    assert {param.name for param in start.params if param.name != "help"} == set(WorkerStartOptions.__annotations__)
    assert sorted(opt for param in start.params for opt in param.opts if opt != "--help") == sorted(
        ["--pool", "-p", "--type", "-t", "--queue", "-q", "--limit", "--name"])


@pytest.mark.parametrize(("name", "expanded"), [
    ("compose-process-%h", "compose-process-3f2a9c1b7d4e.example.org"),
    ("w-%n", "w-3f2a9c1b7d4e"),
    ("w@%d", "w@example.org"),
    ("plain", "plain"),
    ("w-%x", "w-%x"),  # not a placeholder: left, and refused as a name that contains %
])
def test_name_takes_celerys_host_placeholders(name: str, expanded: str) -> None:
    assert expand_host(name, "3f2a9c1b7d4e.example.org") == expanded


def test_a_name_from_the_host_name_is_this_hosts() -> None:
    import socket

    assert expand_host("w-%h") == f"w-{socket.gethostname()}"
