"""Deployment pages: the list (search by name and tag) and one deployment with its Run and Custom
run actions. Reads use the API's services; every action is a call of the API from the page."""

import uuid
from typing import Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.errors import NotFound
from orchestrator.masking import mask_template
from orchestrator.schemas.automations import deployment_owner
from orchestrator.server.api import included
from orchestrator.server.services import automations, deployment_history, deployments, flow_runs, work_pools
from orchestrator.server.ui import forms
from orchestrator.server.ui.automations import action_names, trigger_summary
from orchestrator.server.ui.render import id_in_path, page
from orchestrator.server.ui.runs import newest_runs

router = included.router(include_in_schema=False)
RECENT_RUNS = 10
HISTORY_SHOWN = 20
LISTED = 1000


def schedule_summary(schedule: schemas.DeploymentSchedule) -> str:
    """One line for people: ``cron 0 9 * * 1-5 (Europe/Paris)``, ``every 15 min``..."""
    if schedule.cron:
        timing = f"cron {schedule.cron}"
    elif schedule.interval:
        timing = f"every {_duration(schedule.interval)}"
    else:
        timing = f"rrule {schedule.rrule or ''}".strip()
    return f"{timing} ({schedule.timezone})" if schedule.timezone not in ("UTC", "Etc/UTC") else timing


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


@router.get("/deployments")
def list_page(request: Request, q: str = Query("", max_length=255), tag: str = Query("", max_length=255)
              ) -> HTMLResponse:
    with request.app.state.ctx.sessions() as session:
        rows = deployments.list_(session, tag=tag.strip() or None, limit=LISTED)
        items = [deployments.to_schema(session, row) for row in rows]
    text = q.strip().lower()
    if text:  # by name: the deployment's or its flow's, any part of it
        items = [d for d in items if text in d.full_name.lower()]
    return page(request, "deployments.html", nav="deployments", items=items, q=q, tag=tag,
                summary=schedule_summary)


@router.get("/deployments/{deployment_id}")
def detail_page(request: Request, deployment_id: str) -> HTMLResponse:
    wanted = id_in_path(deployment_id)
    if wanted is None:
        return page(request, "not_found.html", status_code=404,
                    what=f"deployment {deployment_id!r} not found: not a deployment id")
    return _detail_page(request, wanted)


def _detail_page(request: Request, deployment_id: uuid.UUID) -> HTMLResponse:
    ctx = request.app.state.ctx
    with ctx.sessions() as session:
        try:
            deployment = deployments.to_schema(session, deployments.get(session, deployment_id))
        except NotFound as error:
            return page(request, "not_found.html", status_code=404, what=str(error))
        history = deployment_history.list_(session, deployment_id, limit=1000)[-HISTORY_SHOWN:][::-1]
        versions = [schemas.DeploymentVersion.model_validate(row) for row in history]
        statement = flow_runs.query(deployment_id=deployment_id, dialect=ctx.dialect)
        runs = newest_runs(session, statement, 0, RECENT_RUNS)[0]
        pool_template = _pool_template(session, deployment.work_pool_name)
        owned = [automations.to_schema(row, session) for row in automations.list_(session, owner=deployment_owner(deployment_id))]
    return page(request, "deployment.html", nav="deployments", d=deployment, versions=versions, runs=runs,
                fields=forms.fields(deployment.parameter_openapi_schema, deployment.parameters),
                job_fields=forms.fields(pool_template.get("variables") or {}, deployment.job_variables, prefix="jobvar"),
                summary=schedule_summary, automations=owned, trigger_summary=trigger_summary,
                action_names=action_names,
                live={"stream": {"event": "orchestrator.*", "related": f"orchestrator.deployment.{deployment_id}"},
                      "rows": True})


def _pool_template(session: Session, pool_name: str) -> dict[str, Any]:
    try:
        return mask_template(work_pools.get(session, pool_name).base_job_template or {})  # secret defaults hidden
    except NotFound:
        return {}  # a deployment whose pool is gone: job variables as JSON only
