"""Work pools, their queues and their workers."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.errors import Conflict, InvalidInput, NotFound
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import jsonschemas
from orchestrator.server.services.deployments import reject_nulls

WORKER_TYPES = ("process", "docker", "kubernetes")


def check_base_job_template(template: dict[str, Any]) -> None:
    """Refuse a template a worker could not render."""
    def bad(msg: str) -> InvalidInput:
        return InvalidInput([{"loc": ["body", "base_job_template"], "msg": msg, "type": "value_error"}])

    if not isinstance(template.get("job_configuration"), dict):
        raise bad("base_job_template needs a 'job_configuration' object")
    variables = template.get("variables", {})
    if not isinstance(variables, dict) or variables.get("type", "object") != "object":
        raise bad("base_job_template 'variables' must be a JSON schema of type object")
    try:
        jsonschemas.check_schema(variables)
    except jsonschemas.SchemaProblem as problem:
        raise bad(f"base_job_template 'variables' is not a valid JSON schema: {problem}") from None


def create(session: Session, request: schemas.WorkPoolCreate) -> m.WorkPool:
    from job_templates.render import default_template

    if request.base_job_template is None:
        try:
            template = default_template(request.type)
        except KeyError:
            raise InvalidInput(
                [{"loc": ["body", "type"], "msg": f"unknown work pool type '{request.type}'; known: "
                  f"{', '.join(WORKER_TYPES)}", "type": "value_error"}]
            ) from None
    else:
        template = request.base_job_template
    check_base_job_template(template)
    pool = m.WorkPool(
        id=uuid.uuid4(),
        name=request.name,
        type=request.type,
        description=request.description,
        base_job_template=template,
        concurrency_limit=request.concurrency_limit,
        paused=request.paused,
        default_queue_name="default",
    )
    try:
        with session.begin_nested():
            session.add(pool)
            session.flush()
    except IntegrityError:
        raise Conflict(f"work pool '{request.name}' already exists") from None
    session.add(m.WorkQueue(id=uuid.uuid4(), pool_id=pool.id, name="default", priority=1))
    session.flush()
    return pool


def get(session: Session, name: str) -> m.WorkPool:
    pool = session.scalar(select(m.WorkPool).where(m.WorkPool.name == name))
    if pool is None:
        raise NotFound(f"work pool '{name}' not found")
    return pool


def list_(session: Session) -> list[m.WorkPool]:
    return list(session.scalars(select(m.WorkPool).order_by(m.WorkPool.name)))


def update(session: Session, name: str, request: schemas.WorkPoolUpdate) -> m.WorkPool:
    pool = get(session, name)
    changes = request.model_dump(exclude_unset=True)
    reject_nulls(m.WorkPool, changes)
    if changes.get("base_job_template") is not None:
        check_base_job_template(changes["base_job_template"])
    for key, value in changes.items():
        setattr(pool, key, value)
    session.flush()
    return pool


def delete(session: Session, name: str) -> None:
    pool = get(session, name)
    used = session.scalar(select(func.count()).select_from(m.Deployment).where(m.Deployment.work_pool_name == name))
    if used:
        raise Conflict(f"work pool '{name}' is used by {used} deployment(s); delete or move them first")
    session.delete(pool)
    session.flush()


def online_cutoff(heartbeat_seconds: float, now: dt.datetime | None = None) -> dt.datetime:
    """A worker silent for three heartbeats is OFFLINE."""
    return (now or utcnow()) - dt.timedelta(seconds=3 * heartbeat_seconds)


def pool_schema(session: Session, pool: m.WorkPool, heartbeat_seconds: float) -> schemas.WorkPool:
    online = session.scalar(
        select(func.count()).select_from(m.Worker).where(
            m.Worker.pool_id == pool.id, m.Worker.last_heartbeat >= online_cutoff(heartbeat_seconds)
        )
    )
    data = {c: getattr(pool, c) for c in schemas.WorkPool.model_fields if c != "status"}
    return schemas.WorkPool.model_validate({**data, "status": "READY" if online else "NOT_READY"})


# --- queues ------------------------------------------------------------------------------------


def create_queue(session: Session, pool_name: str, request: schemas.WorkQueueCreate) -> m.WorkQueue:
    pool = get(session, pool_name)
    queue = m.WorkQueue(id=uuid.uuid4(), pool_id=pool.id, **request.model_dump())
    try:
        with session.begin_nested():
            session.add(queue)
            session.flush()
    except IntegrityError:
        raise Conflict(f"work queue '{request.name}' already exists in pool '{pool_name}'") from None
    return queue


def get_queue(session: Session, pool_name: str, name: str) -> m.WorkQueue:
    pool = get(session, pool_name)
    queue = session.scalar(select(m.WorkQueue).where(m.WorkQueue.pool_id == pool.id, m.WorkQueue.name == name))
    if queue is None:
        raise NotFound(f"work queue '{name}' not found in pool '{pool_name}'")
    return queue


def list_queues(session: Session, pool_name: str) -> list[m.WorkQueue]:
    pool = get(session, pool_name)
    return list(
        session.scalars(
            select(m.WorkQueue).where(m.WorkQueue.pool_id == pool.id).order_by(m.WorkQueue.priority, m.WorkQueue.name)
        )
    )


def update_queue(session: Session, pool_name: str, name: str, request: schemas.WorkQueueUpdate) -> m.WorkQueue:
    queue = get_queue(session, pool_name, name)
    changes = request.model_dump(exclude_unset=True)
    reject_nulls(m.WorkQueue, changes)
    for key, value in changes.items():
        setattr(queue, key, value)
    session.flush()
    return queue


def delete_queue(session: Session, pool_name: str, name: str) -> None:
    pool = get(session, pool_name)
    if name == pool.default_queue_name:
        raise Conflict(f"'{name}' is the default queue of pool '{pool_name}' and cannot be deleted")
    session.delete(get_queue(session, pool_name, name))
    session.flush()


def queue_schema(queue: m.WorkQueue, pool_name: str) -> schemas.WorkQueue:
    data = {c: getattr(queue, c) for c in schemas.WorkQueue.model_fields if c != "pool_name"}
    return schemas.WorkQueue.model_validate({**data, "pool_name": pool_name})


# --- workers -----------------------------------------------------------------------------------


def heartbeat(session: Session, pool_name: str, worker_name: str) -> m.Worker:
    pool = get(session, pool_name)
    now = utcnow()
    worker = session.scalar(select(m.Worker).where(m.Worker.pool_id == pool.id, m.Worker.name == worker_name))
    if worker is None:
        worker = m.Worker(id=uuid.uuid4(), pool_id=pool.id, name=worker_name, created=now, last_heartbeat=now)
        try:
            with session.begin_nested():
                session.add(worker)
                session.flush()
        except IntegrityError:
            return heartbeat(session, pool_name, worker_name)
    else:
        worker.last_heartbeat = now
        session.flush()
    return worker


def cancellations(session: Session, pool_name: str, worker_name: str) -> list[uuid.UUID]:
    """Runs held by this worker that were asked to stop."""
    return list(session.scalars(
        select(m.FlowRun.id).where(
            m.FlowRun.work_pool_name == pool_name, m.FlowRun.worker_name == worker_name,
            m.FlowRun.state_type == "CANCELLING",
        )
    ))


def list_workers(session: Session, pool_name: str, heartbeat_seconds: float) -> list[schemas.Worker]:
    pool = get(session, pool_name)
    cutoff = online_cutoff(heartbeat_seconds)
    workers = session.scalars(select(m.Worker).where(m.Worker.pool_id == pool.id).order_by(m.Worker.name))
    return [
        schemas.Worker(
            id=w.id, name=w.name, pool_name=pool_name, last_heartbeat=w.last_heartbeat,
            status="ONLINE" if w.last_heartbeat >= cutoff else "OFFLINE",
        )
        for w in workers
    ]
