"""Flow-run pages: the list with its filters and "next page", and one run with its state
timeline, task runs and live logs (the page's script follows them through the API)."""

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Select
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.errors import NotFound
from orchestrator.server.api import included
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, flow_runs, subflows, task_runs, work_pools
from orchestrator.server.services.keyset import Order
from orchestrator.server.ui.render import id_in_path, page
from orchestrator.states import StateType

router = included.router(include_in_schema=False)
PAGE_SIZE = 50
LATE = "Late"
STATE_CHOICES = [s.value for s in StateType] + [LATE]


def newest_runs(session: Session, statement: Select[tuple[m.FlowRun]], offset: int,
                limit: int) -> tuple[list[schemas.FlowRun], bool]:
    """A page of runs in the API's order (newest expected start first) and whether more follow:
    one more row is read instead of counting them all, which a million runs makes slow."""
    rows = session.scalars(statement.order_by(*NEWEST_FIRST.sql()).offset(offset).limit(limit + 1)).all()
    return [flow_runs.to_schema(r) for r in rows[:limit]], len(rows) > limit


# The API's order (newest expected start first, ties by id), read by key as the API reads it: a page
# starts after (older) or before (newer) the key of a row, so a deep page costs what the first does.
NEWEST_FIRST = flow_runs.NEWEST_FIRST


@dataclass(frozen=True)
class Key:
    """Where a page starts: a row's (expected start, id), as ``<ISO time>~<id>`` in the address."""

    start: dt.datetime
    id: uuid.UUID

    @classmethod
    def parse(cls, text: str) -> "Key | None":
        when, _, ident = text.partition("~")
        try:
            start = dt.datetime.fromisoformat(when)
            return cls(start if start.tzinfo else start.replace(tzinfo=dt.UTC), uuid.UUID(ident))
        except ValueError:
            return None  # a mangled address: the first page

    @classmethod
    def of(cls, run: schemas.FlowRun) -> str:
        return f"{run.expected_start_time.isoformat()}~{run.id}"


@dataclass
class RunPage:
    runs: list[schemas.FlowRun]
    older: str | None  # the key to read the next (older) page from, if there is one
    newer: str | None


def keyset_page(session: Session, statement: Select[tuple[m.FlowRun]], limit: int, *, older: Key | None = None,
                newer: Key | None = None) -> RunPage:
    """``limit`` runs after ``older`` (or before ``newer``, or the newest), one row more read to
    know whether a page follows."""
    if newer is not None:
        oldest_first = Order(NEWEST_FIRST.columns, descending=False)
        rows = list(session.scalars(statement.where(NEWEST_FIRST.before((newer.start, newer.id)))
                                    .order_by(*oldest_first.sql()).limit(limit + 1)))
        more_newer, rows = len(rows) > limit, rows[:limit][::-1]
        more_older = True  # the row the key names is older
    else:
        if older is not None:
            statement = statement.where(NEWEST_FIRST.after((older.start, older.id)))
        rows = list(session.scalars(statement.order_by(*NEWEST_FIRST.sql()).limit(limit + 1)))
        more_older, rows = len(rows) > limit, rows[:limit]
        more_newer = older is not None
    runs = [flow_runs.to_schema(r) for r in rows]
    return RunPage(runs, Key.of(runs[-1]) if runs and more_older else None,
                   Key.of(runs[0]) if runs and more_newer else None)


def _utc(text: str) -> dt.datetime | None:
    """A time from the filter form (``datetime-local``, read as UTC like every time the UI shows)."""
    try:
        value = dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


@router.get("/runs")
def list_page(
    request: Request,
    state: str = Query("", max_length=64),
    deployment: str = Query("", max_length=64),
    pool: str = Query("", max_length=255),
    tag: str = Query("", max_length=255),
    since: str = Query("", max_length=64, description="Expected start at or after (UTC)."),
    until: str = Query("", max_length=64, description="Expected start at or before (UTC)."),
    older: str = Query("", max_length=128),
    newer: str = Query("", max_length=128),
) -> HTMLResponse:
    ctx = request.app.state.ctx
    filters: dict[str, Any] = {"dialect": ctx.dialect, "pool": pool or None, "tags": [tag] if tag else []}
    if state == LATE:
        filters["state_names"] = [LATE]
    elif state in StateType.__members__:
        filters["states"] = [StateType(state)]
    try:
        filters["deployment_id"] = uuid.UUID(deployment) if deployment else None
    except ValueError:
        deployment = ""  # not an id: no filter, and the select shows "any"
    statement = flow_runs.query(**filters)
    start, end = _utc(since), _utc(until)
    if start is not None:
        statement = statement.where(m.FlowRun.expected_start_time >= start)
    if end is not None:
        statement = statement.where(m.FlowRun.expected_start_time <= end)
    with ctx.sessions() as session:
        found = keyset_page(session, statement, PAGE_SIZE, older=Key.parse(older) if older else None,
                            newer=Key.parse(newer) if newer else None)
        choices = [(str(d.id), f"{name}/{d.name}") for d, name in _deployment_names(session)]
        pools = [p.name for p in work_pools.list_(session)]
    query = {"state": state, "deployment": deployment, "pool": pool, "tag": tag,
             "since": since if start else "", "until": until if end else ""}
    first = not (older or newer)
    stream: dict[str, Any] = {"event": "orchestrator.flow-run.*"}
    if filters["deployment_id"] is not None:
        stream["related"] = f"orchestrator.deployment.{filters['deployment_id']}"
    # Only the first page takes in runs it does not show yet; later pages update their own rows.
    live = {"stream": stream, "rows": True, "refresh": first}
    return page(request, "runs.html", nav="runs", runs=found.runs, found=found, query=query, states=STATE_CHOICES,
                deployments=choices, pools=pools, live=live, selectable=True)


def _deployment_names(session: Session) -> list[tuple[m.Deployment, str]]:
    rows = deployments.list_(session, limit=1000)
    return [(d, deployments.to_schema(session, d).flow_name) for d in rows]


@router.get("/runs/{run_id}")
def detail_page(request: Request, run_id: str) -> HTMLResponse:
    wanted = id_in_path(run_id)
    if wanted is None:
        return page(request, "not_found.html", status_code=404, what=f"flow run {run_id!r} not found: not a run id")
    return _detail_page(request, wanted)


def _detail_page(request: Request, run_id: uuid.UUID) -> HTMLResponse:
    with request.app.state.ctx.sessions() as session:
        try:
            run = flow_runs.to_schema(flow_runs.get(session, run_id))
        except NotFound as error:
            return page(request, "not_found.html", status_code=404, what=str(error))
        states = [schemas.State(type=s.type, name=s.name, message=s.message, timestamp=s.timestamp)
                  for s in flow_runs.history(session, run_id)]
        tasks = [schemas.TaskRun.model_validate(row) for row in task_runs.list_(session, run_id, limit=200)]
        _, parent_row, child_rows, _ = subflows.relatives(session, run_id)
        parent = parent_row and flow_runs.to_schema(parent_row, session)
        children = [flow_runs.to_schema(row, session) for row in child_rows]
        flow = session.get(m.Flow, run.flow_id)
        deployment = None
        if run.deployment_id is not None:
            try:
                deployment = deployments.to_schema(session, deployments.get(session, run.deployment_id))
            except NotFound:
                deployment = None  # deleted since: the run stays, without Run again
    # Run again: the same parameters, job variables and the tags the run was given on top of its
    # deployment's (the deployment adds its own again).
    extra_tags = [t for t in run.tags if deployment is None or t not in deployment.tags]
    again = {"parameters": run.parameters, "job_variables": run.job_variables, "tags": extra_tags}
    return page(request, "run.html", nav="runs", run=run, states=states, tasks=tasks, deployment=deployment,
                again=again, flow_name=flow.name if flow is not None else None, parent=parent, children=children)
