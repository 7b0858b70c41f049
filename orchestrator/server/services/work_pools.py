"""Work pools, their queues and their workers."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy import update as update_rows  # this module has its own update()
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from orchestrator import schemas
from orchestrator.errors import Conflict, InvalidInput, NotFound, WorkerNameTaken
from orchestrator.masking import keep_masked_template, mask_template
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import emitted, events, jsonschemas, masked
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
    queue = m.WorkQueue(id=uuid.uuid4(), pool_id=pool.id, name="default", priority=1)
    session.add(queue)
    session.flush()
    events.record(session, [emitted.work_pool_event(pool, "created"), emitted.work_queue_event(queue, pool, "created")])
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
        # Defaults sent back masked (the template read, edited and saved) keep the stored secrets.
        changes["base_job_template"] = keep_masked_template(changes["base_job_template"], pool.base_job_template or {})
        check_base_job_template(changes["base_job_template"])
        masked.forget_pool(session, pool.name)
    before = {key: getattr(pool, key) for key in changes}
    for key, value in changes.items():
        setattr(pool, key, value)
    session.flush()
    pause, rest = emitted.split_pause(_shown(emitted.field_changes(before, changes)))
    events.record(session, [*([emitted.work_pool_event(pool, "updated", changes=rest)] if rest else []),
                            *([emitted.work_pool_event(pool, pause)] if pause else [])])
    return pool


def _shown(changes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Changes as an event shows them: a template's secret defaults masked."""
    if "base_job_template" in changes:
        changes["base_job_template"] = {k: mask_template(v) if isinstance(v, dict) else v
                                        for k, v in changes["base_job_template"].items()}
    return changes


def delete(session: Session, name: str) -> None:
    pool = get(session, name)
    used = session.scalar(select(func.count()).select_from(m.Deployment).where(m.Deployment.work_pool_name == name))
    if used:
        raise Conflict(f"work pool '{name}' is used by {used} deployment(s); delete or move them first")
    events.record(session, [emitted.work_pool_event(pool, "deleted")])
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
    data["base_job_template"] = mask_template(pool.base_job_template or {})
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
    events.record(session, [emitted.work_queue_event(queue, pool, "created")])
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
    before = {key: getattr(queue, key) for key in changes}
    for key, value in changes.items():
        setattr(queue, key, value)
    session.flush()
    pool = get(session, pool_name)
    pause, rest = emitted.split_pause(emitted.field_changes(before, changes))
    events.record(session, [*([emitted.work_queue_event(queue, pool, "updated", changes=rest)] if rest else []),
                            *([emitted.work_queue_event(queue, pool, pause)] if pause else [])])
    return queue


def delete_queue(session: Session, pool_name: str, name: str) -> None:
    pool = get(session, pool_name)
    if name == pool.default_queue_name:
        raise Conflict(f"'{name}' is the default queue of pool '{pool_name}' and cannot be deleted")
    queue = get_queue(session, pool_name, name)
    events.record(session, [emitted.work_queue_event(queue, pool, "deleted")])
    session.delete(queue)
    session.flush()


def queue_schema(queue: m.WorkQueue, pool_name: str) -> schemas.WorkQueue:
    data = {c: getattr(queue, c) for c in schemas.WorkQueue.model_fields if c != "pool_name"}
    return schemas.WorkQueue.model_validate({**data, "pool_name": pool_name})


# --- workers -----------------------------------------------------------------------------------


def heartbeat(session: Session, pool_name: str, worker_name: str, *, heartbeat_seconds: float | None = None,
              starting: bool = False, instance: uuid.UUID | None = None) -> m.Worker:
    """The worker is alive. With ``heartbeat_seconds``, a worker that was new or OFFLINE emits
    ``orchestrator.worker.online`` (and its pool and queues ``ready`` if no other worker was online).

    ``instance`` is the id of the worker process sending the beat (``_renew`` says whose beats are
    taken); a refused one is ``WorkerNameTaken``. ``starting`` (a worker's first heartbeat; needs
    ``heartbeat_seconds``): the name is refused while a worker of the pool that is ONLINE holds it
    (unless it is this same process, repeating its first beat); an OFFLINE one's is taken over."""
    pool = get(session, pool_name)
    now = utcnow()
    worker = session.scalar(select(m.Worker).where(m.Worker.pool_id == pool.id, m.Worker.name == worker_name))
    last: dt.datetime | None = None
    if worker is None:
        worker = m.Worker(id=uuid.uuid4(), pool_id=pool.id, name=worker_name, created=now, last_heartbeat=now,
                          instance_id=instance)
        try:
            with session.begin_nested():
                session.add(worker)
                session.flush()
        except IntegrityError:  # another one inserted it meanwhile: its heartbeat is the one to beat
            return heartbeat(session, pool_name, worker_name, heartbeat_seconds=heartbeat_seconds, starting=starting,
                             instance=instance)
    else:
        last = worker.last_heartbeat
        _renew(session, pool, worker, heartbeat_seconds, now, starting=starting, instance=instance)
    if heartbeat_seconds is not None:
        cutoff = online_cutoff(heartbeat_seconds, now)
        if last is None or last < cutoff:
            _came_online(session, pool, worker, last, cutoff, now)
    return worker


def _renew(session: Session, pool: m.WorkPool, worker: m.Worker, heartbeat_seconds: float | None,
           now: dt.datetime, *, starting: bool, instance: uuid.UUID | None) -> None:
    """Renew ``worker``'s heartbeat for the process ``instance``, or ``WorkerNameTaken``. Taken: a
    name that is OFFLINE (whoever beats takes it over), a name this very process holds, and -- a
    beat of a running worker, not ``starting`` -- a name whose holder sent no id (a worker of an
    older release, or a name held since before ids). So a process that was cut off from the API
    while its name went OFFLINE and was taken by another is refused, and so is a beat without an
    id under the name of a process that sends one. One conditional UPDATE: of two workers starting
    under one name at once, the row lock (or SQLite's single writer) lets one through; the other
    then sees the fresh heartbeat and is refused."""
    cutoff = online_cutoff(heartbeat_seconds, now) if heartbeat_seconds is not None else None
    this_process = m.Worker.instance_id.is_(None) if instance is None else m.Worker.instance_id == instance
    allowed = [m.Worker.last_heartbeat < cutoff] if cutoff is not None else []
    if not starting:
        allowed += [this_process, m.Worker.instance_id.is_(None)]
    elif instance is not None:
        allowed.append(this_process)
    taken = bool(allowed) and session.execute(
        update_rows(m.Worker).where(m.Worker.id == worker.id, or_(*allowed))
        .values(last_heartbeat=now, instance_id=instance).execution_options(synchronize_session=False)
    ).rowcount
    if not taken:
        session.refresh(worker, ["last_heartbeat", "instance_id"])
        raise _name_taken(pool, worker, heartbeat_seconds, now, starting=starting)
    set_committed_value(worker, "last_heartbeat", now)
    set_committed_value(worker, "instance_id", instance)


def _name_taken(pool: m.WorkPool, worker: m.Worker, heartbeat_seconds: float | None, now: dt.datetime, *,
                starting: bool) -> WorkerNameTaken:
    seen = worker.last_heartbeat
    window = dt.timedelta(seconds=3 * (heartbeat_seconds or 0))
    silent, free_in = (now - seen).total_seconds(), max(0.0, (seen + window - now).total_seconds())
    if starting:
        detail = (f"worker name '{worker.name}' is in use in pool '{pool.name}' by a worker that is ONLINE "
                  f"(last heartbeat {seen:%Y-%m-%d %H:%M:%S} UTC; the name is free once it is OFFLINE)")
    else:
        detail = (f"worker name '{worker.name}' in pool '{pool.name}' is held by another worker process now, "
                  f"which is ONLINE (last heartbeat {seen:%Y-%m-%d %H:%M:%S} UTC): this one lost the name "
                  "while its heartbeats did not reach the API")
    return WorkerNameTaken(detail, silent_seconds=max(0.0, silent), free_in_seconds=free_in)


def _came_online(session: Session, pool: m.WorkPool, worker: m.Worker, last: dt.datetime | None,
                 cutoff: dt.datetime, now: dt.datetime) -> None:
    found = [emitted.worker_event(pool, worker, "online", event_id=emitted.derived_id(worker.id, "online", last),
                                  occurred=now)]
    others = session.scalar(select(func.count()).select_from(m.Worker).where(
        m.Worker.pool_id == pool.id, m.Worker.id != worker.id, m.Worker.last_heartbeat >= cutoff))
    if not others:  # the pool (and its queues) had no online worker: now it is ready
        found += _status_events(session, pool, "ready", emitted.derived_id(pool.id, "ready", worker.id, last), now)
    events.record(session, found)


def _status_events(session: Session, pool: m.WorkPool, status: str, key: uuid.UUID,
                   now: dt.datetime) -> list[Any]:
    queues = session.scalars(select(m.WorkQueue).where(m.WorkQueue.pool_id == pool.id).order_by(m.WorkQueue.name))
    return [emitted.work_pool_event(pool, status, event_id=key, occurred=now),
            *(emitted.work_queue_event(q, pool, status, event_id=emitted.derived_id(key, q.id), occurred=now)
              for q in queues)]


OFFLINE_LOOKBACK = dt.timedelta(hours=1)  # workers silent longer than this were reported offline already


def mark_offline(session: Session, heartbeat_seconds: float, now: dt.datetime | None = None) -> int:
    """``orchestrator.worker.offline`` for each worker silent three heartbeats (and ``not-ready``
    for its pool and queues when no worker of the pool is online). Ids derive from the last
    heartbeat, so every pass and every replica writes each once. Returns how many events were new."""
    now = now or utcnow()
    cutoff = online_cutoff(heartbeat_seconds, now)
    silent = list(session.execute(
        select(m.Worker, m.WorkPool).join(m.WorkPool, m.WorkPool.id == m.Worker.pool_id)
        .where(m.Worker.last_heartbeat < cutoff, m.Worker.last_heartbeat >= cutoff - OFFLINE_LOOKBACK)))
    if not silent:
        return 0
    found = [emitted.worker_event(pool, w, "offline", event_id=emitted.derived_id(w.id, "offline", w.last_heartbeat),
                                  occurred=w.last_heartbeat + (now - cutoff), last_heartbeat=w.last_heartbeat)
             for w, pool in silent]
    pools = {pool.id: pool for _, pool in silent}
    online = set(session.scalars(select(m.Worker.pool_id).where(m.Worker.pool_id.in_(list(pools)),
                                                                m.Worker.last_heartbeat >= cutoff)))
    for pool_id, pool in pools.items():
        if pool_id not in online:
            last = max(w.last_heartbeat for w, p in silent if p.id == pool_id)
            found += _status_events(session, pool, "not-ready", emitted.derived_id(pool_id, "not-ready", last),
                                    last + (now - cutoff))
    return events.record(session, found)


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
