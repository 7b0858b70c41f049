"""``orch flow-run ...``."""

from __future__ import annotations

import sys
import uuid

import typer

from orchestrator.cli import ansi
from orchestrator.cli.output import client, fail, print_json, table

app = typer.Typer(help="Inspect, follow and cancel flow runs.", no_args_is_help=True)
LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def _run_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        fail(f"{text!r} is not a flow run id")


@app.command("ls")
def ls(
    state: list[str] = typer.Option([], "--state", help="Only runs in this state type (repeatable)."),
    deployment: str = typer.Option(None, "--deployment", help="Only runs of this deployment (flow/name or id)."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
) -> None:
    from orchestrator.states import StateType

    states = []
    for s in state:
        try:
            states.append(StateType(s.upper()))
        except ValueError:
            fail(f"unknown state {s!r}; one of {', '.join(t.value for t in StateType)}")
    api = client()
    deployment_id = api.read_deployment_ref(deployment).id if deployment else None
    page = api.list_flow_runs(state=[str(s) for s in states], deployment_id=deployment_id, limit=limit)
    table(f"Flow runs ({len(page.items)} of {page.total})", ["id", "name", "state", "expected start", "end"],
          [[r.id, r.name, r.state.name, r.expected_start_time.isoformat(timespec="seconds"),
            r.end_time.isoformat(timespec="seconds") if r.end_time else ""] for r in page.items])


@app.command("inspect")
def inspect(run_id: str) -> None:
    print_json(client().read_flow_run(_run_id(run_id)))


@app.command("cancel")
def cancel(run_id: str) -> None:
    run = client().cancel_flow_run(_run_id(run_id))
    print(f"Flow run '{run.name}' is {run.state.type}.")


@app.command("logs")
def logs(
    run_id: str,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
) -> None:
    """Print what the flow run printed and logged."""
    api = client()
    rid = _run_id(run_id)
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
