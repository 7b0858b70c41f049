"""Flow-run pages: the list with its filters and "next page", and one run with its state
timeline, task runs and live logs (the page's script follows them through the API)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Select
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.errors import NotFound
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, flow_runs, task_runs, work_pools
from orchestrator.server.ui.render import page
from orchestrator.states import StateType

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
LATE = "Late"
STATE_CHOICES = [s.value for s in StateType] + [LATE]


def newest_runs(session: Session, statement: Select[tuple[m.FlowRun]], offset: int,
                limit: int) -> tuple[list[schemas.FlowRun], bool]:
    """A page of runs in the API's order (newest expected start first) and whether more follow:
    one more row is read instead of counting them all, which a million runs makes slow."""
    rows = session.scalars(statement.order_by(m.FlowRun.expected_start_time.desc(), m.FlowRun.id)
                           .offset(offset).limit(limit + 1)).all()
    return [flow_runs.to_schema(r) for r in rows[:limit]], len(rows) > limit


@router.get("/runs")
def list_page(
    request: Request,
    state: str = Query("", max_length=64),
    deployment: str = Query("", max_length=64),
    pool: str = Query("", max_length=255),
    tag: str = Query("", max_length=255),
    offset: int = Query(0, ge=0, le=schemas.INT64_MAX),
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
    with ctx.sessions() as session:
        runs, more = newest_runs(session, flow_runs.query(**filters), offset, PAGE_SIZE)
        choices = [(str(d.id), f"{name}/{d.name}") for d, name in _deployment_names(session)]
        pools = [p.name for p in work_pools.list_(session)]
    query = {"state": state, "deployment": deployment, "pool": pool, "tag": tag}
    return page(request, "runs.html", nav="runs", runs=runs, more=more, offset=offset, page_size=PAGE_SIZE,
                query=query, states=STATE_CHOICES, deployments=choices, pools=pools)


def _deployment_names(session: Session) -> list[tuple[m.Deployment, str]]:
    rows = deployments.list_(session, limit=1000)
    return [(d, deployments.to_schema(session, d).flow_name) for d in rows]


@router.get("/runs/{run_id}")
def detail_page(request: Request, run_id: uuid.UUID) -> HTMLResponse:
    with request.app.state.ctx.sessions() as session:
        try:
            run = flow_runs.to_schema(flow_runs.get(session, run_id))
        except NotFound as error:
            return page(request, "not_found.html", status_code=404, what=str(error))
        states = [schemas.State(type=s.type, name=s.name, message=s.message, timestamp=s.timestamp)
                  for s in flow_runs.history(session, run_id)]
        tasks = [schemas.TaskRun.model_validate(row) for row in task_runs.list_(session, run_id, limit=200)]
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
                again=again)
