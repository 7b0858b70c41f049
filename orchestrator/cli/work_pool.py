"""``orch work-pool ...``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from orchestrator.cli.output import client, fail, print_json, table

app = typer.Typer(help="Manage work pools.", no_args_is_help=True)
NAME = typer.Argument(..., help="Name of the work pool.", show_default=False)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Name of the new pool (no / % & > <, at most 255 characters).",
                               show_default=False),
    type_: str = typer.Option("process", "--type", "-t", help="process, docker or kubernetes."),
    base_job_template: Path = typer.Option(None, "--base-job-template", help="JSON file with the job template."),
    concurrency_limit: int = typer.Option(None, "--concurrency-limit", min=0,
                                          help="Most runs of the pool at once (default: no limit)."),
    paused: bool = typer.Option(False, "--paused", help="Create it paused: its runs wait until it is resumed."),
) -> None:
    """Create a work pool (with its 'default' queue)."""
    from orchestrator import schemas

    template = None
    if base_job_template is not None:
        try:
            template = json.loads(base_job_template.read_text())
        except (OSError, ValueError) as error:
            fail(f"cannot read base job template {base_job_template}: {error}")
    pool = client().create_work_pool(schemas.WorkPoolCreate(
        name=name, type=type_, base_job_template=template, concurrency_limit=concurrency_limit, paused=paused))
    print(f"Created work pool '{pool.name}' of type {pool.type}.")


@app.command("ls")
def ls() -> None:
    """List the work pools: type, status (READY while a worker is online), paused, limit."""
    pools = client().list_work_pools()
    table("Work pools", ["name", "type", "status", "paused", "concurrency limit"],
          [[p.name, p.type, p.status, p.paused, p.concurrency_limit] for p in pools])


@app.command("inspect")
def inspect(name: str = NAME) -> None:
    """Print a work pool as JSON, with its base job template."""
    print_json(client().read_work_pool(name))


def _update(name: str, **changes: object) -> None:
    from orchestrator import schemas

    client().update_work_pool(name, schemas.WorkPoolUpdate(**changes))  # type: ignore[arg-type]


@app.command("pause")
def pause(name: str = NAME) -> None:
    """Pause a work pool: its due runs wait (they are not published) until it is resumed."""
    _update(name, paused=True)
    print(f"Paused work pool '{name}'.")


@app.command("resume")
def resume(name: str = NAME) -> None:
    """Resume a paused work pool: its due runs go out at once."""
    _update(name, paused=False)
    print(f"Resumed work pool '{name}'.")


@app.command("set-concurrency-limit")
def set_concurrency_limit(
    name: str = NAME,
    limit: int = typer.Argument(..., min=0, help="Most runs of the pool at once.", show_default=False),
) -> None:
    """Set how many runs of the pool may run at once."""
    _update(name, concurrency_limit=limit)
    print(f"Set concurrency limit of work pool '{name}' to {limit}.")


@app.command("delete")
def delete(name: str = NAME) -> None:
    """Delete a work pool (refused while deployments use it)."""
    client().delete_work_pool(name)
    print(f"Deleted work pool '{name}'.")


@app.command("default-template")
def default_template(
    type_: str = typer.Option("process", "--type", "-t", help="process, docker or kubernetes."),
) -> None:
    """Print the default base job template of a worker type."""
    from job_templates.render import default_template as load

    try:
        print_json(load(type_))
    except KeyError:
        fail(f"unknown worker type '{type_}'; known: process, docker, kubernetes")
