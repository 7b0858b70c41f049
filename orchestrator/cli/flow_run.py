"""``orch flow-run ...``."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import typer

from orchestrator.cli import ansi, checks
from orchestrator.cli.output import client, fail, table

app = typer.Typer(help="Inspect, follow and cancel flow runs.", no_args_is_help=True)
LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
RUN_HELP = "Flow run name (e.g. brave-otter) or id."
SHOWN_MATCHES = 10


def _run_id(api: Any, ref: str) -> uuid.UUID:
    """A run by id or by name; a name several runs share is refused, listing them."""
    try:
        return uuid.UUID(ref)
    except ValueError:
        pass
    page = api.list_flow_runs(name=ref, limit=SHOWN_MATCHES)
    if not page.items:
        fail(f"no flow run is named {ref!r} (nor is it a run id)")
    if page.total > 1:
        shown = ", ".join(f"{r.id} ({r.state.name}, {r.expected_start_time.isoformat(timespec='seconds')})"
                          for r in page.items)
        plus = "+" if page.total_capped else ""
        more = f" and {page.total - len(page.items)}{plus} more" if page.total > len(page.items) else ""
        fail(f"{page.total}{plus} flow runs are named {ref!r}: {shown}{more}; give the id")
    return page.items[0].id  # type: ignore[no-any-return]


@app.command("ls")
def ls(
    state: list[str] = typer.Option([], "--state", help="Only runs in this state: a type (FAILED) or a name "
                                    "(Late), any case (repeatable).", callback=checks.states),
    deployment: str = typer.Option(None, "--deployment", metavar="NAME",
                                   help="Only runs of this deployment (flow/name or id)."),
    limit: int = typer.Option(20, "--limit", metavar="N", min=1, max=1000, help="How many runs to show."),
) -> None:
    """The newest runs first, with their flow, deployment and state."""
    from orchestrator.states import StateType

    types = [value for value in state if value in StateType.__members__]  # spelled as the API does (``checks``)
    names = [value for value in state if value not in StateType.__members__]
    api = client()
    deployment_id = api.read_deployment_ref(deployment).id if deployment else None
    page = api.list_flow_runs(state=types, state_name=names, deployment_id=deployment_id, limit=limit)
    deployments = _deployment_names(api, {r.deployment_id for r in page.items if r.deployment_id})
    flows = _flow_names(api, {r.flow_id for r in page.items})
    rows = []
    for r in page.items:
        deployment_flow, _, name = deployments.get(r.deployment_id, "/").partition("/")
        flow = flows.get(r.flow_id, deployment_flow)
        # No deployment: deleted since (the run kept its pool), or none ever (a flow called directly).
        gone = "(deleted)" if r.work_pool_name else "— (called directly)"
        rows.append([r.id, r.name, flow, name if r.deployment_id else gone, r.state.name,
                     r.expected_start_time.isoformat(timespec="seconds"),
                     r.end_time.isoformat(timespec="seconds") if r.end_time else ""])
    total = f"{page.total}+" if page.total_capped else str(page.total)  # the server counts up to 1000
    table(f"Flow runs ({len(page.items)} of {total})",
          ["id", "name", "flow", "deployment", "state", "expected start", "end"], rows)


def _flow_names(api: Any, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Each flow's name, in one request for the page; none from a server older than ``/api/flows``
    (the deployments' names name their runs' flows then)."""
    from orchestrator.errors import NotFound

    try:
        return {flow.id: flow.name for flow in api.read_flows(ids)}
    except NotFound:
        return {}


def _deployment_names(api: Any, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """``flow/deployment`` of each id; one read per distinct deployment of the page."""
    from orchestrator.errors import NotFound

    names = {}
    for deployment_id in ids:
        try:
            names[deployment_id] = api.read_deployment(deployment_id).full_name
        except NotFound:  # deleted between the two reads
            continue
    return names


@app.command("inspect")
def inspect(run_id: str = typer.Argument(..., metavar="RUN", help=RUN_HELP)) -> None:
    """The run as JSON: state, parameters, times, worker, result, flow version and task runs."""
    from orchestrator.cli.task_runs import print_run_with_task_runs

    api = client()
    print_run_with_task_runs(api, api.read_flow_run(_run_id(api, run_id)))


@app.command("cancel")
def cancel(run_id: str = typer.Argument(..., metavar="RUN", help=RUN_HELP)) -> None:
    """Cancel a run: at once if it has not started, else its worker stops it."""
    api = client()
    run = api.cancel_flow_run(_run_id(api, run_id))
    print(f"Flow run '{run.name}' is {run.state.type}.")


@app.command("logs")
def logs(
    run_id: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
) -> None:
    """Print what the flow run printed and logged."""
    api = client()
    rid = _run_id(api, run_id)
    after = 0
    shown = ansi.for_stream(sys.stdout)  # colour codes the flow printed: rendered on a terminal only
    while True:
        batch = api.read_logs(rid, after=after)
        for log in batch:
            stamp = log.timestamp.isoformat(timespec="milliseconds")
            print(f"{stamp} {LEVELS.get(log.level, log.level):<7} {shown(log.message)}", flush=True)
            after = log.id
        if batch:
            continue
        if not follow or api.read_flow_run(rid).state.is_final:
            return
        api.wait_for_flow_run(rid, 1.0)  # returns at once when the run ends; paces reading otherwise
