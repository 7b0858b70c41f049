"""``orch``: the entry point. Every user mistake ends as one line on stderr and a non-zero exit."""

from __future__ import annotations

import re
import sys

import typer

from orchestrator.cli import (
    api_key,
    automation,
    db,
    deploy,
    deployment,
    event,
    flow_run,
    help_format,
    server,
    webhook,
    work_pool,
    work_queue,
    worker,
)
from orchestrator.cli.output import one_line

app = typer.Typer(
    name="orch",
    help="orchestrator: deployments, work pools and workers for Python flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("dev")(server.dev)
app.command("deploy")(deploy.deploy)
app.add_typer(server.app, name="server")
app.add_typer(worker.app, name="worker")
app.add_typer(work_pool.app, name="work-pool")
app.add_typer(work_queue.app, name="work-queue")
app.add_typer(deployment.app, name="deployment")
app.add_typer(flow_run.app, name="flow-run")
app.add_typer(automation.app, name="automation")
app.add_typer(event.app, name="event")
app.add_typer(api_key.app, name="api-key")
app.add_typer(webhook.app, name="webhook")
app.add_typer(db.app, name="db")


def _print_version(wanted: bool) -> None:
    if not wanted:
        return
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        print(f"orchestrator {installed('orchestrator')}")
    except PackageNotFoundError:  # run from a source tree that was never installed
        print("orchestrator (not installed)")
    raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the installed version and exit."),
) -> None:
    pass


help_format.use_for(app)  # last: after every command and group is registered


def main() -> None:
    from pydantic import ValidationError

    from orchestrator.errors import OrchestratorError

    try:
        app()
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
                             f"{e['msg'].removeprefix('Value error, ')}" for e in error.errors())
        print(f"Error: invalid setting: {problems}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _is_input_model(title: str) -> bool:
    from orchestrator import schemas

    model = getattr(schemas, title, None)
    return isinstance(model, type) and issubclass(model, schemas.InModel)


if __name__ == "__main__":
    main()
