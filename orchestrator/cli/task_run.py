"""``orch task-run ls``: the task runs of tasks called outside any flow (a flow run's own are in
``orch flow-run inspect``)."""

from __future__ import annotations

import typer

from orchestrator.cli.output import client, print_json, table

app = typer.Typer(help="Task runs of tasks called outside a flow.", no_args_is_help=True)


@app.command("ls")
def ls(
    task_name: str = typer.Option(None, "--task", metavar="NAME", help="Only this task's runs."),
    limit: int = typer.Option(20, "--limit", metavar="N", min=1, max=10000, help="How many to show."),
    as_json: bool = typer.Option(False, "--json", help="Print them as JSON."),
) -> None:
    """Task runs of tasks called outside any flow, newest first."""
    runs = client().list_task_runs_outside_flows(task_name=task_name, limit=limit)
    if as_json:
        print_json([t.model_dump(mode="json", exclude={"flow_run_id", "updated"}) for t in runs])
        return
    table(f"Task runs outside flows ({len(runs)})", ["name", "task", "version", "state", "attempts", "start", "end", "id"],
          [[t.name, t.task_name, t.version, t.state_name, f"{t.run_count} of {t.max_retries + 1}", t.start_time,
            t.end_time, t.id] for t in runs])
