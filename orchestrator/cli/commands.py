"""The ``orch`` Typer app: every command and group (``cli/main.py`` runs it)."""

from __future__ import annotations

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
    task_run,
    webhook,
    work_pool,
    work_queue,
    worker,
)

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
app.add_typer(task_run.app, name="task-run")
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
