"""Schedules of a deployment, under ``/api/deployments/{id}/schedules``, and backfill.

A schedule is addressed by its id or its slug. Every change commits before the scheduler hears of
it (an ``after_commit`` hook), so it creates or removes runs at once, not at its next pass.
"""

import datetime as dt
import uuid

from fastapi import Query, status

from orchestrator import schemas
from orchestrator.schedules import describe, next_times, parse
from orchestrator.schemas.base import OutModel
from orchestrator.server.api import included
from orchestrator.server.api.audit import KeyFingerprint
from orchestrator.server.api.context import Ctx
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import deployment_history, deployments
from orchestrator.server.services import schedules as svc

router = included.router(prefix="/deployments/{deployment_id}", tags=["schedules"])


@router.get("/schedules")
def list_schedules(deployment_id: uuid.UUID, ctx: Ctx) -> list[schemas.DeploymentSchedule]:
    with ctx.sessions() as session:
        deployments.get(session, deployment_id)
        return [svc.to_schema(row) for row in svc.list_(session, deployment_id)]


@router.post("/schedules", status_code=status.HTTP_201_CREATED)
def create_schedule(deployment_id: uuid.UUID, body: schemas.ScheduleCreate, ctx: Ctx,
                    key: KeyFingerprint) -> schemas.DeploymentSchedule:
    """Add a schedule; 409 if the slug is taken, 422 naming the schedule for a bad expression."""
    with ctx.transaction() as session:
        deployment = deployments.get(session, deployment_id)
        before = deployment_history.snapshot(deployment)
        row = svc.create(session, deployment, body)
        deployment_history.record(session, deployment, before, api_key_fingerprint=key)
        return svc.to_schema(row)


@router.get("/schedules/{schedule}")
def read_schedule(deployment_id: uuid.UUID, schedule: str, ctx: Ctx) -> schemas.DeploymentSchedule:
    with ctx.sessions() as session:
        return svc.to_schema(svc.get(session, deployments.get(session, deployment_id), schedule))


@router.patch("/schedules/{schedule}")
def update_schedule(deployment_id: uuid.UUID, schedule: str, body: schemas.ScheduleUpdate,
                    ctx: Ctx, key: KeyFingerprint) -> schemas.DeploymentSchedule:
    """Pause (``active: false``) deletes the schedule's future runs that have not started; resume
    and other changes replace them."""
    with ctx.transaction() as session:
        deployment = deployments.get(session, deployment_id)
        before = deployment_history.snapshot(deployment)
        row = svc.update_(session, deployment, schedule, body)
        deployment_history.record(session, deployment, before, api_key_fingerprint=key)
        return svc.to_schema(row)


@router.delete("/schedules/{schedule}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(deployment_id: uuid.UUID, schedule: str, ctx: Ctx, key: KeyFingerprint) -> None:
    with ctx.transaction() as session:
        deployment = deployments.get(session, deployment_id)
        before = deployment_history.snapshot(deployment)
        svc.delete_(session, deployment, schedule)
        deployment_history.record(session, deployment, before, api_key_fingerprint=key)


@router.post("/backfill")
def backfill(deployment_id: uuid.UUID, body: schemas.BackfillRequest, ctx: Ctx) -> schemas.BackfillResult:
    """Create the runs the schedules would have created in ``[start, end]``; runs that exist
    (same schedule and time) are left as they are, so repeating a backfill creates nothing."""
    with ctx.transaction() as session:
        result = svc.backfill(session, deployments.get(session, deployment_id), body,
                              max_runs=ctx.settings.scheduler_backfill_max_runs)
    if result.created:
        ctx.runs_due()
    return result


PREVIEW_MAX = 50


class SchedulePreview(OutModel):
    """What a schedule would do: its slug and description, and its next times in its zone."""

    slug: str
    description: str
    timezone: str
    next: list[dt.datetime]


@router.post("/schedules/preview")
def preview_schedule(deployment_id: uuid.UUID, body: schemas.ScheduleCreate, ctx: Ctx,
                     count: int = Query(5, ge=1, le=PREVIEW_MAX)) -> SchedulePreview:
    """The next ``count`` times of a schedule before it is added (nothing is stored): the same
    checks as adding it, so a bad expression is the same 422."""
    with ctx.sessions() as session:
        deployment = deployments.get(session, deployment_id)
        [(slug, values)] = svc.prepare([body], parameters=deployment.parameters,
                                       schema=deployment.parameter_openapi_schema,
                                       enforce=deployment.enforce_parameter_schema, loc=("body",))
    spec = parse({**values["schedule"], "timezone": values["timezone"]}, name=slug)
    return SchedulePreview(slug=slug, description=describe(spec), timezone=spec.timezone,
                                   next=next_times(spec, utcnow(), n=count))
