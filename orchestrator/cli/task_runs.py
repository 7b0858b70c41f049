"""What ``orch flow-run inspect`` shows of a run's task runs, its parent and subflow runs, and its
latest events."""

from __future__ import annotations

import sys
from typing import Any

from orchestrator.cli.output import print_json, table


def _when(value: Any) -> str:
    return value.isoformat(timespec="milliseconds") if value is not None else ""


RECENT_EVENTS = 20


def print_run_with_task_runs(api: Any, run: Any) -> None:
    """The run as JSON with its task runs under ``task_runs``, the run that called it as a subflow
    under ``parent_flow_run`` and the subflow runs it called under ``subflow_runs``, and its latest
    events under ``events`` (state changes, and what its infrastructure reported: why a run
    CRASHED), oldest first, so a pipe gets one JSON document; on a terminal also a table of the task
    runs and one of the subflow runs."""
    task_runs = api.read_task_runs(run.id)
    relatives = api.read_flow_run_relatives(run.id)
    page = api.read_events({"any_resource": {"id": [f"orchestrator.flow-run.{run.id}"]}}, limit=RECENT_EVENTS)
    data = run.model_dump(mode="json")
    data["task_runs"] = [t.model_dump(mode="json", exclude={"flow_run_id", "updated"}) for t in task_runs]
    data["parent_task_run_id"] = relatives.parent_task_run_id and str(relatives.parent_task_run_id)
    data["parent_flow_run"] = relatives.parent and _brief(relatives.parent)
    data["subflow_runs"] = [_brief(child) for child in relatives.children]
    data["events"] = [{"occurred": e.occurred.isoformat(), "event": e.event,
                       "resource": e.resource["orchestrator.resource.id"], "payload": e.payload}
                      for e in reversed(page.events)]
    print_json(data)
    if task_runs and sys.stdout.isatty():
        table(f"Task runs ({len(task_runs)})", ["name", "task", "version", "state", "attempts", "start", "end"],
              [[t.name, t.task_name, t.version, t.state_name, f"{t.run_count} of {t.max_retries + 1}",
                _when(t.start_time), _when(t.end_time)] for t in task_runs])
    if relatives.children and sys.stdout.isatty():
        table(f"Subflow runs ({len(relatives.children)})", ["id", "name", "state", "start", "end"],
              [[c.id, c.name, c.state.name, _when(c.start_time), _when(c.end_time)] for c in relatives.children])


def _brief(run: Any) -> dict[str, Any]:
    """A related run as ``inspect`` names it: enough to inspect it in turn."""
    return {"id": str(run.id), "name": run.name, "state": run.state.name}
