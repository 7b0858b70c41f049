"""``orch``: the entry point. Every user mistake ends as one line on stderr and a non-zero exit.

``orch server start`` with nothing but its own well-formed options is served without typer and the
CLI's command groups (``cli/commands.py``), which the API process would otherwise hold for its whole
life for nothing: ~20-40 ms of its start's CPU and ~2 MB (bench/RESULTS.md, "Server cold start,
round 4"). Anything else (``--help``, another command, an option or value typer must judge) goes
through the Typer app, which answers it as it always did. ``orch worker start`` likewise
(``cli/worker_start.py``): the worker process would hold typer and every group for nothing.
"""

from __future__ import annotations

import re
import sys
from typing import TypedDict

from orchestrator.cli.checks import max_processes
from orchestrator.cli.output import one_line, own_words
from orchestrator.cli.plain_options import option_values
from orchestrator.cli.worker_start import start_worker, worker_start_options


def main() -> None:
    from pydantic import ValidationError

    from orchestrator.errors import OrchestratorError

    try:
        options = server_start_options(sys.argv[1:])
        worker_options = worker_start_options(sys.argv[1:])  # None unless `worker start`
        if worker_options is not None:
            try:
                start_worker(**worker_options)
            except BrokenPipeError:  # typer's answer to a closed stdout
                sys.exit(1)
        elif options is None:
            from orchestrator.cli.commands import app

            app()
        else:
            from orchestrator.cli.serve import serve

            try:
                serve(**options)
            except BrokenPipeError:  # stdout closed before "API at" was printed: typer's answer
                sys.exit(1)
    except OrchestratorError as error:
        print(f"Error: {one_line(error.detail)}", file=sys.stderr)
        sys.exit(1)
    except ValidationError as error:
        if error.title != "Settings":
            if not _is_input_model(error.title):
                raise
            # The values given on the command line broke an input model's rule: the same answer the
            # API's 422 would give, checked before sending.
            thing = re.sub(r"(?<!^)(?=[A-Z])", " ", re.sub(r"(Create|Update)$", "", error.title)).lower()
            print(f"Error: invalid {thing}: {one_line(error.errors(include_url=False))}", file=sys.stderr)
            sys.exit(1)
        problems = "; ".join(f"ORCH_{'_'.join(str(p) for p in e['loc']).upper()}: "
                             f"{own_words(e['msg'])}" for e in error.errors())
        print(f"Error: invalid setting: {problems}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


class StartOptions(TypedDict, total=False):
    """``serve``'s arguments given on the command line (the others come from the settings)."""

    host: str
    port: int
    processes: int


def server_start_options(argv: list[str]) -> StartOptions | None:
    """``serve``'s arguments when ``argv`` is ``server start`` followed only by ``--host H``,
    ``--port N``, ``--processes N`` (or ``--opt=value``; cli/server.py's ``start``), numbers in plain
    digits within the option's range, as typer would parse them (the last of a repeated option wins);
    None for anything else, which typer parses: a number out of range is typer's usage error (exit 2)."""
    if argv[:2] != ["server", "start"]:
        return None
    options = StartOptions()
    pairs = option_values(argv[2:])
    if pairs is None:
        return None
    for name, value in pairs:
        if name == "--host":
            options["host"] = value
        elif not (value.isascii() and value.isdigit()):
            return None
        elif name == "--port" and 1 <= int(value) <= 65535:
            options["port"] = int(value)
        elif name == "--processes" and 1 <= int(value) <= max_processes():
            options["processes"] = int(value)
        else:
            return None
    return options


def _is_input_model(title: str) -> bool:
    """Whether ``title`` names an input model. Every one, not only those ``orchestrator.schemas``
    re-exports: api keys, events, automations and webhooks keep theirs in their own modules."""
    from orchestrator.schemas.base import InModel

    models: list[type] = [InModel]
    while models:
        model = models.pop()
        if model.__name__ == title:
            return True
        models += model.__subclasses__()
    return False


if __name__ == "__main__":
    main()
