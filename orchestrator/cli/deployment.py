"""``orch deployment ...``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer

from orchestrator.cli import checks, deployment_history, schedule
from orchestrator.cli.output import client, fail, parse_key_values, parse_parameters, print_json, table

app = typer.Typer(help="Inspect and run deployments.", no_args_is_help=True)
app.add_typer(schedule.app, name="schedule")
app.command("backfill")(schedule.backfill)
app.command("history")(deployment_history.history)


@app.command("ls")
def ls(work_pool: str = typer.Option(None, "--pool", help="Only deployments of this pool.")) -> None:
    """Deployments with their id, pool, paused and version."""
    api = client()
    if work_pool is not None:
        api.read_work_pool(work_pool)  # a pool that does not exist is an error, not an empty table
    deployments = api.list_deployments(work_pool_name=work_pool)
    table("Deployments", ["name", "id", "pool", "paused", "version"],
          [[d.full_name, d.id, d.work_pool_name, d.paused, d.version] for d in deployments])


@app.command("inspect")
def inspect(name: str = typer.Argument(..., help="flow/deployment or id")) -> None:
    """The deployment as JSON."""
    print_json(client().read_deployment_ref(name))


@app.command("run")
def run(
    name: str = typer.Argument(..., help="flow/deployment or id"),
    param: list[str] = typer.Option([], "--param", metavar="K=V",
                                    help="Parameter as key=value (value read as JSON if it parses)."),
    params: str = typer.Option(None, "--params", metavar="JSON", help="All parameters as a JSON object."),
    job_variable: list[str] = typer.Option([], "--job-variable", metavar="K=V",
                                           help="Job variable as key=value."),
    tag: list[str] = typer.Option([], "--tag", help="Tag for this run (repeatable)."),
    start_in: str = typer.Option(None, "--start-in", metavar="DURATION", callback=checks.start_in,
                                 help="Start after a delay: 30s, 5m, 2h, 1d."),
    start_at: str = typer.Option(None, "--start-at", metavar="TIME", callback=checks.iso_time,
                                 help="Start at an ISO 8601 time (naive: local time)."),
    watch: bool = typer.Option(False, "--watch", help="Wait for the end, saying what the run waits for; exit 0 "
                               "only if COMPLETED."),
    timeout: float = typer.Option(None, "--timeout", metavar="SECONDS", min=0.001, callback=checks.finite,
                                  help="With --watch: give up after this long (exit 1); the run goes on."),
) -> None:
    """Create a run of a deployment; with --watch, follow it to its end."""
    from orchestrator import schemas
    from orchestrator.sdk.deployments import wait_for_final

    parameters = parse_parameters(params, param)
    if start_in and start_at:
        fail("use either --start-in or --start-at, not both")
    if timeout is not None and not watch:
        fail("--timeout only applies with --watch")
    scheduled = None
    if start_in:
        scheduled = dt.datetime.now(dt.UTC) + checks.delay(start_in)
    elif start_at:
        scheduled = checks.instant(start_at)
    api = client()
    deployment = api.read_deployment_ref(name)
    flow_run = api.create_flow_run(deployment.id, schemas.FlowRunCreate(
        parameters=parameters, job_variables=parse_key_values(job_variable, "--job-variable"), tags=tag,
        scheduled_time=scheduled))
    print(f"Created flow run '{flow_run.name}' ({flow_run.id}) of {deployment.full_name}.", flush=True)
    if not watch:
        return
    final = wait_for_final(api, flow_run, timeout, _print_progress)
    if not final.state.is_final:
        why = api.read_waiting_reason(final.id).reason  # None once it started
        fail(f"flow run '{final.name}' is still {final.state.name} after {timeout:g} s"
             f"{f' ({why})' if why else ''}; it was not cancelled (orch flow-run cancel {final.name})")
    message = f": {final.state.message}" if final.state.message else ""
    print(f"Flow run '{final.name}' ended {final.state.type} ({final.state.name}){message}")
    if final.state.type != "COMPLETED":
        raise typer.Exit(1)


def _print_progress(run: Any, why: Any) -> None:
    """One line each time the run's state or what it waits for changes (``wait_for_final``)."""
    if run.state.is_final:
        return  # the caller says how it ended
    print(f"{run.state.name}: {why.reason}" if why is not None and why.reason else run.state.name, flush=True)


def _set_paused(name: str, paused: bool) -> None:
    api = client()
    deployment = api.read_deployment_ref(name)
    api.set_deployment_paused(deployment.id, paused)
    print(f"{'Paused' if paused else 'Resumed'} deployment {deployment.full_name}.")


@app.command("pause")
def pause(name: str = typer.Argument(..., help="flow/deployment or id")) -> None:
    """Pause the deployment's schedules (their runs ahead are deleted); manual runs still run."""
    _set_paused(name, True)


@app.command("resume")
def resume(name: str = typer.Argument(..., help="flow/deployment or id")) -> None:
    """Resume the deployment's schedules."""
    _set_paused(name, False)


@app.command("delete")
def delete(name: str = typer.Argument(..., help="flow/deployment or id")) -> None:
    """Delete the deployment and its schedules; its runs that have not started are deleted or cancelled."""
    api = client()
    deployment = api.read_deployment_ref(name)
    api.delete_deployment(deployment.id)
    print(f"Deleted deployment {deployment.full_name}.")


@app.command("preview")
def preview(
    name: str = typer.Argument(..., help="flow/deployment or id"),
    job_variable: list[str] = typer.Option([], "--job-variable", metavar="K=V",
                                           help="Job variable of the run, as key=value."),
) -> None:
    """Print the job a run of NAME would get.

    The pool's template rendered with its defaults, the deployment's job variables and these.
    {{ $VAR }} stays as written: the worker fills it."""
    from job_templates.render import merge_values, render, variable_defaults
    from orchestrator.server.services.deployments import validate_job_variables

    api = client()
    deployment = api.read_deployment_ref(name)
    pool = api.read_work_pool(deployment.work_pool_name)
    run_values = parse_key_values(job_variable, "--job-variable")
    template = pool.base_job_template
    validate_job_variables(template, merge_values(variable_defaults(template), deployment.job_variables, run_values),
                           pool_name=pool.name, partial=False)
    print_json(render(template, deployment.job_variables, run_values, environ=_WorkerEnvironment()))


class _WorkerEnvironment(dict[str, str]):
    """Stands in for the worker's environment, which this machine does not have."""

    def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
        return f"{{{{ ${key} }}}}"
