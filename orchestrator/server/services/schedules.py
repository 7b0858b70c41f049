"""Deployment schedules: rows, the reset rules, backfill, and creating auto-scheduled runs in bulk.

Runs created from a schedule carry the tag ``auto-scheduled`` and the idempotency key
``scheduled:{slug}:{time in UTC}``: with the unique (deployment_id, idempotency_key) constraint,
any number of schedulers (server replicas) and backfills never create a run twice.

The reset rules, as Prefect words them -- "pausing a schedule, updating your deployment, and other
actions reset your auto-scheduled runs": a reset deletes the future auto-scheduled runs that have
not started (still ``Scheduled``), and bumps the schedules' ``version`` and clears their
``scheduled_until`` so the scheduler creates them afresh (or not, if paused). Manual runs and
backfilled runs are never touched.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import Row, Select, bindparam, delete, select, update
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.errors import Conflict, InvalidInput, NotFound
from orchestrator.schedules import ScheduleError, Spec, default_slug, next_times, parse, to_storage
from orchestrator.schemas.events import EventIn
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import emitted, events
from orchestrator.server.services.new_runs import insert_runs, run_values
from orchestrator.server.services.parameters import validate_parameters
from orchestrator.states import DEFAULT_NAMES, StateType

AUTO_TAG = "auto-scheduled"
BACKFILL_TAG = "backfill"
KEY_PREFIX = "scheduled:"
# Set on a session whose commit must wake the scheduler (see ``Scheduler``'s after_commit hook).
CHANGED = "orch.schedules_changed"
_CHUNK = 500


def run_key(slug: str, when: dt.datetime) -> str:
    return f"{KEY_PREFIX}{slug}:{when.astimezone(dt.UTC).isoformat().replace('+00:00', 'Z')}"


class ScheduleSource(Protocol):
    slug: str
    schedule: dict[str, Any]
    timezone: str


class RunSource(Protocol):
    """What creating a deployment's runs reads of it (a row, or the scheduler's lighter copy)."""

    id: uuid.UUID
    flow_id: uuid.UUID
    version: str | None
    work_pool_name: str
    parameters: dict[str, Any]
    tags: list[Any]


def spec_of(row: ScheduleSource) -> Spec:
    return parse({**row.schedule, "timezone": row.timezone}, name=row.slug)


def of_deployment(session: Session, deployment_id: uuid.UUID) -> Sequence[Row[Any]]:
    """A deployment's schedules as rows of the table's columns, in the order its ``schedules``
    relationship lists them (the claim's answer: no entity loaded, ``services/claims.py``)."""
    return session.execute(_of_deployment(), {"deployment_id": deployment_id}).all()


@functools.cache
def _of_deployment() -> Select[Any]:
    table = m.DeploymentSchedule.__table__
    return select(*table.c).where(table.c.deployment_id == bindparam("deployment_id")).order_by(table.c.created)


def to_schema(row: m.DeploymentSchedule | Row[Any]) -> schemas.DeploymentSchedule:
    timing = {k: v for k, v in row.schedule.items() if k in schemas.TIMING_FIELDS}
    return schemas.DeploymentSchedule.model_validate(
        {"id": row.id, "deployment_id": row.deployment_id, "slug": row.slug, **timing, "timezone": row.timezone,
         "active": row.active, "parameters": row.parameters, "created": row.created, "updated": row.updated})


def mark_changed(session: Session) -> None:
    session.info[CHANGED] = True


# --- schedule rows -----------------------------------------------------------------------------


Prepared = tuple[str, dict[str, Any]]  # slug, column values


def prepare(requests: Sequence[schemas.ScheduleCreate], *, parameters: dict[str, Any], schema: dict[str, Any],
            enforce: bool, loc: Sequence[str | int] = ("body", "schedules")) -> list[Prepared]:
    """Check a deployment's schedules (distinct slugs, parameters valid against its schema)."""
    prepared: list[Prepared] = []
    for index, request in enumerate(requests):
        spec = _spec_of_request(request, [*loc, index])
        slug = request.slug or default_slug(spec)
        if any(slug == s for s, _ in prepared):
            raise InvalidInput([{"loc": [*loc, index, "slug"], "type": "value_error",
                                 "msg": f"schedule '{slug}' appears twice; give the schedules distinct slugs"}])
        _check_parameters(slug, request.parameters, parameters=parameters, schema=schema, enforce=enforce,
                          loc=[*loc, index, "parameters"])
        prepared.append((slug, {"schedule": to_storage(spec), "timezone": spec.timezone, "active": request.active,
                                "parameters": request.parameters}))
    return prepared


def apply(session: Session, deployment: m.Deployment, prepared: Sequence[Prepared], *,
          now: dt.datetime | None = None) -> bool:
    """Make the deployment's schedules exactly ``prepared``. Returns whether anything changed."""
    now = now or utcnow()
    existing = {row.slug: row for row in deployment.schedules}
    wanted = dict(prepared)
    found: list[EventIn] = []
    for slug, row in existing.items():
        if slug not in wanted:
            found.append(emitted.schedule_event(row, deployment, "deleted"))
            deployment.schedules.remove(row)  # delete-orphan
    for slug, values in prepared:
        row = existing.get(slug)
        if row is None:
            row = m.DeploymentSchedule(id=uuid.uuid4(), deployment_id=deployment.id, slug=slug, version=0,
                                       created=now, updated=now, **values)
            deployment.schedules.append(row)
            found.append(emitted.schedule_event(row, deployment, "created"))
        elif any(getattr(row, k) != v for k, v in values.items()):
            found += _changed(row, deployment, values)
            row.updated = now
    if found:
        mark_changed(session)
        events.record(session, found)
    return bool(found)


def _changed(row: m.DeploymentSchedule, deployment: m.Deployment, values: dict[str, Any]) -> list[EventIn]:
    """Apply ``values`` to ``row``; its events: ``paused``/``resumed`` for ``active``, ``updated`` for the rest."""
    changes = emitted.field_changes({k: getattr(row, k) for k in values}, values)
    for key, value in values.items():
        setattr(row, key, value)
    pause, rest = emitted.split_pause(changes, "active")
    return [*([emitted.schedule_event(row, deployment, "updated", rest)] if rest else []),
            *([emitted.schedule_event(row, deployment, pause)] if pause else [])]


def list_(session: Session, deployment_id: uuid.UUID) -> list[m.DeploymentSchedule]:
    return list(session.scalars(select(m.DeploymentSchedule).where(m.DeploymentSchedule.deployment_id == deployment_id)
                                .order_by(m.DeploymentSchedule.created, m.DeploymentSchedule.slug)))


def get(session: Session, deployment: m.Deployment, ref: str) -> m.DeploymentSchedule:
    """A schedule by id or slug."""
    condition = m.DeploymentSchedule.slug == ref
    try:
        condition = m.DeploymentSchedule.id == uuid.UUID(ref)
    except ValueError:
        pass
    row = session.scalar(select(m.DeploymentSchedule).where(m.DeploymentSchedule.deployment_id == deployment.id,
                                                            condition))
    if row is None:
        raise NotFound(f"schedule '{ref}' not found on deployment '{deployment.name}'")
    return row


def create(session: Session, deployment: m.Deployment, request: schemas.ScheduleCreate, *,
           now: dt.datetime | None = None) -> m.DeploymentSchedule:
    now = now or utcnow()
    [(slug, values)] = prepare([request], parameters=deployment.parameters, schema=deployment.parameter_openapi_schema,
                               enforce=deployment.enforce_parameter_schema, loc=("body",))
    taken = session.scalar(select(m.DeploymentSchedule.id).where(m.DeploymentSchedule.deployment_id == deployment.id,
                                                                 m.DeploymentSchedule.slug == slug))
    if taken is not None:
        raise Conflict(f"schedule '{slug}' already exists on deployment '{deployment.name}'")
    row = m.DeploymentSchedule(id=uuid.uuid4(), deployment_id=deployment.id, slug=slug, version=0, created=now,
                               updated=now, **values)
    session.add(row)
    session.flush()
    mark_changed(session)
    events.record(session, [emitted.schedule_event(row, deployment, "created")])
    return row


def update_(session: Session, deployment: m.Deployment, ref: str, request: schemas.ScheduleUpdate, *,
            now: dt.datetime | None = None) -> m.DeploymentSchedule:
    """Pause/resume, new parameters or new timing; any change resets this schedule's runs."""
    now = now or utcnow()
    row = get(session, deployment, ref)
    changes = request.model_dump(exclude_unset=True, exclude_none=True)
    values: dict[str, Any] = {}
    timing = {k: v for k, v in changes.items() if k in (*schemas.TIMING_FIELDS, "timezone")}
    if timing:
        new_kind = any(k in timing for k in ("cron", "interval", "rrule"))
        base = {} if new_kind else dict(row.schedule)
        data = {**base, "timezone": row.timezone, **timing}
        if new_kind and "timezone" not in timing and "rrule" in timing:
            data.pop("timezone")  # let an rrule's TZID speak
        spec = _spec_of_data(data, row.slug, ["body"])
        values.update(schedule=to_storage(spec), timezone=spec.timezone)
    if "parameters" in changes:
        _check_parameters(row.slug, changes["parameters"], parameters=deployment.parameters,
                          schema=deployment.parameter_openapi_schema, enforce=deployment.enforce_parameter_schema,
                          loc=["body", "parameters"])
        values["parameters"] = changes["parameters"]
    if "active" in changes:
        values["active"] = changes["active"]
    if any(getattr(row, k) != v for k, v in values.items()):
        events.record(session, _changed(row, deployment, values))
        row.updated = now
        session.flush()
        reset(session, deployment.id, slug=row.slug, now=now)
    return row


def delete_(session: Session, deployment: m.Deployment, ref: str, *, now: dt.datetime | None = None) -> None:
    row = get(session, deployment, ref)
    reset(session, deployment.id, slug=row.slug, now=now)
    events.record(session, [emitted.schedule_event(row, deployment, "deleted")])
    session.delete(row)
    session.flush()


def _spec_of_request(request: schemas.ScheduleCreate, loc: list[str | int]) -> Spec:
    data = request.model_dump(include={*schemas.TIMING_FIELDS, "timezone"}, exclude_none=True)
    return _spec_of_data(data, request.slug, loc)


def _spec_of_data(data: dict[str, Any], name: str | None, loc: list[str | int]) -> Spec:
    try:
        return parse(data, name=name)
    except ScheduleError as error:
        raise InvalidInput([{"loc": loc, "msg": str(error), "type": "value_error"}]) from None


def _check_parameters(slug: str, overrides: dict[str, Any], *, parameters: dict[str, Any], schema: dict[str, Any],
                      enforce: bool, loc: list[str | int]) -> None:
    """A schedule's runs must pass the deployment's schema, required parameters included."""
    if not enforce or not schema:
        return
    try:
        validate_parameters(schema, {**parameters, **overrides})
    except InvalidInput as error:
        details = error.detail if isinstance(error.detail, list) else [{"msg": str(error.detail)}]
        raise InvalidInput([{**d, "loc": loc, "msg": f"schedule '{slug}': {d.get('msg')}"} for d in details]) from None


# --- the reset rules ---------------------------------------------------------------------------


def reset(session: Session, deployment_id: uuid.UUID, *, slug: str | None = None,
          now: dt.datetime | None = None) -> int:
    """Delete future not-started auto-scheduled runs (of one schedule, or all) and make the scheduler
    start those schedules afresh. Returns how many runs were deleted."""
    now = now or utcnow()
    table = m.DeploymentSchedule
    ids_query = select(table.id).where(table.deployment_id == deployment_id)
    if slug is not None:
        ids_query = ids_query.where(table.slug == slug)
    # Lock in id order, as the scheduler does, so the two never deadlock (PostgreSQL; SQLite's
    # single writer needs no lock). Bumping the version first makes a racing scheduler pass give
    # up writing runs computed from the old definition.
    ids = list(session.scalars(ids_query.order_by(table.id).with_for_update()))
    if ids:
        session.execute(update(table).where(table.id.in_(ids))
                        .values(version=table.version + 1, scheduled_until=None, updated=table.updated)
                        .execution_options(synchronize_session="fetch"))
    prefix = KEY_PREFIX if slug is None else f"{KEY_PREFIX}{slug}:"
    run = m.FlowRun
    rows = session.execute(select(run.id, run.tags).where(
        run.deployment_id == deployment_id, run.state_type == StateType.SCHEDULED,
        run.state_name == DEFAULT_NAMES[StateType.SCHEDULED], run.expected_start_time > now,
        run.idempotency_key.startswith(prefix, autoescape=True))).all()
    doomed = [run_id for run_id, tags in rows if AUTO_TAG in tags and BACKFILL_TAG not in tags]
    deleted = 0
    for chunk in _chunks(doomed):
        result = session.execute(delete(run).where(run.id.in_(chunk), run.state_type == StateType.SCHEDULED,
                                                   run.state_name == DEFAULT_NAMES[StateType.SCHEDULED])
                                 .execution_options(synchronize_session=False))
        deleted += result.rowcount or 0  # type: ignore[attr-defined]
    mark_changed(session)
    return deleted


# --- creating runs -----------------------------------------------------------------------------


def run_row(deployment: RunSource, queue_name: str, slug: str, when: dt.datetime, parameters: dict[str, Any],
            now: dt.datetime, extra_tags: Iterable[str] = ()) -> dict[str, Any]:
    """The columns of one auto-scheduled run of ``deployment`` at ``when``."""
    return run_values(
        flow_id=deployment.flow_id, deployment_id=deployment.id, deployment_version=deployment.version,
        work_pool_name=deployment.work_pool_name, work_queue_name=queue_name,
        parameters={**deployment.parameters, **parameters}, job_variables={},
        tags=[*deployment.tags, AUTO_TAG, *extra_tags], idempotency_key=run_key(slug, when),
        expected_start_time=when, now=now)


def queue_for(session: Session, deployment: m.Deployment) -> str:
    pool_queue = session.scalar(select(m.WorkPool.default_queue_name).where(m.WorkPool.name == deployment.work_pool_name))
    if pool_queue is None:
        raise NotFound(f"work pool '{deployment.work_pool_name}' of deployment '{deployment.name}' not found")
    return deployment.work_queue_name or pool_queue


def backfill(session: Session, deployment: m.Deployment, request: schemas.BackfillRequest, *, max_runs: int,
             now: dt.datetime | None = None) -> schemas.BackfillResult:
    """Create the runs the schedules would have created in ``[start, end]``; idempotent."""
    now = now or utcnow()
    if request.end < request.start:
        raise InvalidInput([{"loc": ["body", "end"], "msg": "end is before start", "type": "value_error"}])
    rows = list(deployment.schedules)
    if request.schedules is not None:
        unknown = sorted(set(request.schedules) - {r.slug for r in rows})
        if unknown:
            raise NotFound(f"schedule '{unknown[0]}' not found on deployment '{deployment.name}'")
        rows = [r for r in rows if r.slug in request.schedules]
    else:
        rows = [r for r in rows if r.active]
    if not rows:
        raise InvalidInput([{"loc": ["body", "schedules"], "type": "value_error",
                             "msg": f"deployment '{deployment.name}' has no active schedule to backfill"}])
    queue = queue_for(session, deployment)
    planned: list[dict[str, Any]] = []
    for row in rows:
        _check_parameters(row.slug, row.parameters, parameters=deployment.parameters,
                          schema=deployment.parameter_openapi_schema, enforce=deployment.enforce_parameter_schema,
                          loc=["body", "schedules"])
        for when in next_times(spec_of(row), request.start, request.end, n=max_runs + 1 - len(planned)):
            planned.append(run_row(deployment, queue, row.slug, when, row.parameters, now, (BACKFILL_TAG,)))
        if len(planned) > max_runs:
            raise InvalidInput([{"loc": ["body"], "type": "value_error",
                                 "msg": f"the window holds more than {max_runs} runs; backfill a shorter one"}])
    created = len(insert_runs(session, planned))
    return schemas.BackfillResult(created=created, existing=len(planned) - created)


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]
