"""``orch deploy``: register the deployments of ``orchestrator.yaml``."""

from __future__ import annotations

from typing import Any

import typer

from orchestrator.cli import checks
from orchestrator.cli.output import client, fail, one_line, parse_key_values, parse_parameters


def deploy(
    names: list[str] = typer.Argument(None, help="Deployments of orchestrator.yaml (name or flow/name)."),
    all_: bool = typer.Option(False, "--all", help="Deploy every deployment of the file."),
    pool: str = typer.Option(None, "--pool", "-p", help="Work pool (overrides work_pool.name; default: "
                      "the file's, then ORCH_DEFAULT_WORK_POOL_NAME)."),
    queue: str = typer.Option(None, "--queue", "-q", help="Work queue (overrides work_pool.work_queue_name)."),
    param: list[str] = typer.Option([], "--param", metavar="K=V", help="Default parameter k=v (JSON value), over the file's."),
    params: str = typer.Option(None, "--params", metavar="JSON", help="Default parameters as a JSON object, over the file's."),
    job_variable: list[str] = typer.Option([], "--job-variable", metavar="K=V", help="Job variable k=v, over the file's."),
    tag: list[str] = typer.Option([], "--tag", help="Tags (repeatable); replace the file's."),
    version: str = typer.Option(None, "--version", help="Version (default: file, @flow, git commit, source hash)."),
    description: str = typer.Option(None, "--description", help="Description (default: file, then docstring)."),
    cron: str = typer.Option(None, "--cron", help="A cron schedule; replaces the file's schedules."),
    interval: str = typer.Option(None, "--interval", metavar="DURATION", callback=checks.interval,
                                 help="An interval schedule: seconds, 5m / 2h / 1d, or ISO 8601 (PT15M), at least "
                                 "1 s; replaces the file's."),
    rrule: str = typer.Option(None, "--rrule", help="An RRULE schedule; replaces the file's schedules."),
) -> None:
    """Deploy the deployments of orchestrator.yaml in this folder: NAME..., --all, or the only one."""
    from orchestrator.cli.project import (
        Overrides,
        ProjectError,
        build_request,
        load_flow,
        load_project,
        select,
    )
    from orchestrator.errors import NotFound, OrchestratorError

    # Each given, even empty or 0: the schedule's own check refuses what is not one.
    given = {"cron": cron, "interval": None if interval is None else checks.interval_value(interval), "rrule": rrule}
    schedules = [_checked_schedule(kind, value) for kind, value in given.items() if value is not None]
    project = load_project()
    chosen = select(project, list(names or []), all_)
    from orchestrator.settings import Settings

    overrides = Overrides(
        work_pool_name=pool, default_work_pool_name=Settings().default_work_pool_name, work_queue_name=queue, parameters=parse_parameters(params, param),
        job_variables=parse_key_values(job_variable, "--job-variable"), tags=tag or None, version=version,
        description=description, schedules=schedules or None,
    )
    directory = project.file.parent
    flows = [load_flow(spec, directory) for spec in chosen]  # every entrypoint loads before anything is sent
    seen: set[str] = set()
    for spec, flow in zip(chosen, flows, strict=True):
        full = f"{flow.name}/{spec.name}"
        if full in seen:
            fail(f"{project.file.name} has deployment '{full}' twice")
        seen.add(full)
    api = client()
    for spec, flow in zip(chosen, flows, strict=True):
        full = f"{flow.name}/{spec.name}"
        try:
            existing = None
            if spec.schedules is None or spec.paused is None:
                try:
                    existing = api.read_deployment_by_name(full)
                except NotFound:
                    existing = None
            request = build_request(project, spec, flow, overrides, existing)
            deployment = api.upsert_deployment(request)
        except ProjectError:
            raise  # it names the file and the deployment already
        except OrchestratorError as error:
            fail(f"deployment '{full}': {one_line(error.detail)}")
        print(f"Deployed {full} ({deployment.id}) to work pool '{deployment.work_pool_name}', version "
              f"{deployment.version}; {_schedules_note(spec, overrides, existing, len(deployment.schedules))}.",
              flush=True)
    if chosen:
        print(f"Run one with: orch deployment run '{flows[0].name}/{chosen[0].name}'")


def _checked_schedule(kind: str, value: object) -> dict[str, object]:
    """A schedule given on the command line, checked here: its error names the option, not the file."""
    import pydantic

    from orchestrator import schemas
    from orchestrator.cli.schedule import first_error

    try:
        schemas.ScheduleCreate.model_validate({kind: value})
    except pydantic.ValidationError as error:
        fail(f"--{kind}: {first_error(error)}")
    return {kind: value}


def _schedules_note(spec: Any, overrides: Any, existing: Any, count: int) -> str:
    if overrides.schedules is not None:
        return f"{count} schedule(s) from the command line"
    if spec.schedules is not None:
        return f"{count} schedule(s) from the file" if count else "no schedules (schedules: [])"
    if existing is not None:
        return f"{count} schedule(s) kept from the server (the file has no 'schedules' key)"
    return "no schedules"


__all__ = ["deploy"]
