"""The events the server emits by itself: the one place that knows their names, resources, related
resources and payloads (listed in docs/events.md, "Events the system emits").

Each builder returns an ``EventIn``; the service that makes the change records it with
``events.record`` in the same transaction, so a change and its event commit (or roll back) together.

Ids are derived, not random, wherever two writers could decide the same fact (two replicas marking
one worker offline) or a later event must name an earlier one (``follows``): ``derived_id(...)``
of the same words is the same UUID, and ``record`` keeps the first. A flow run's state event is
``derived_id(run, <its flow_run_states row id>)`` -- its first state, written in bulk without
reading the row ids back, is ``derived_id(run, "created")`` -- so the next state's event ``follows``
it without any column to remember it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import and_, select, tuple_
from sqlalchemy.orm import Session

from orchestrator.schemas.events import RESOURCE_ID, EventIn, related, resource
from orchestrator.server.db import models as m
from orchestrator.server.db.types import among, utcnow

PREFIX = "orchestrator"
_NAMESPACE = uuid.UUID("4f1b8a52-6f0e-4d39-9b43-1d0c1e5a7e11")
MESSAGE_LIMIT = 100_000  # characters of a state message kept in an event, as Prefect
RELATED_TTL = 60.0  # seconds a run's related names are reused (a queue re-created under its name: at most this stale)


def derived_id(*words: object) -> uuid.UUID:
    """The same words, the same id: replicas deciding one fact write one event."""
    return uuid.uuid5(_NAMESPACE, "/".join(str(w) for w in words))


def derived_id_text(*words: str) -> str:
    """``str(derived_id(*words))`` of text words, without building the UUID objects (the
    scheduler derives one per run it creates: 300,000 in a pass of 100,000 deployments)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE.bytes + "/".join(words).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5, as uuid.uuid5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def resource_id(kind: str, key: object) -> str:
    return f"{PREFIX}.{kind}.{key}"


def worker_resource_id(pool_name: str, worker_name: str) -> str:
    """Workers are named within their pool; the run rows and the workers themselves know both names."""
    return resource_id("worker", f"{pool_name}.{worker_name}")


# --- flow runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """The names and ids of what a run belongs to, for its related resources."""

    flow: dict[str, str] | None
    deployment: dict[str, str] | None
    queue: dict[str, str] | None
    pool: dict[str, str] | None


_NO_CONTEXT = RunContext(None, None, None, None)
_ContextKey = tuple[uuid.UUID, uuid.UUID | None, str | None, str | None]


class _ContextCache:
    """Related names by (flow, deployment, pool name, queue name), kept ``RELATED_TTL`` seconds:
    creating a run is the API's hottest write, and these names hardly ever change (Prefect keeps
    them five minutes)."""

    def __init__(self, size: int = 2000) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._items: dict[tuple[str, _ContextKey], tuple[float, RunContext]] = {}

    def get(self, scope: str, key: _ContextKey) -> RunContext | None:
        with self._lock:
            found = self._items.get((scope, key))
        return found[1] if found and found[0] > time.monotonic() else None

    def put(self, scope: str, key: _ContextKey, context: RunContext) -> None:
        with self._lock:
            if len(self._items) >= self._size:
                self._items.clear()
            self._items[(scope, key)] = (time.monotonic() + RELATED_TTL, context)


_contexts = _ContextCache()
_scopes: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # engine -> its URL, rendered


def _scope(session: Session) -> str:
    """Whose names the cached contexts are: the database's URL, rendered once per engine (rendering
    it at each create was ~4 µs of the create's thread)."""
    bind = session.get_bind()
    scope = _scopes.get(bind)
    if scope is None:
        scope = _scopes[bind] = str(bind.url)
    return scope


def _run_contexts(session: Session, keys: Iterable[_ContextKey]) -> dict[_ContextKey, RunContext]:
    """One query for the keys not cached (usually none, or one)."""
    scope = _scope(session)
    found: dict[_ContextKey, RunContext] = {}
    missing: list[_ContextKey] = []
    for key in set(keys):
        cached = _contexts.get(scope, key)
        if cached is None:
            missing.append(key)
        else:
            found[key] = cached
    if not missing:
        return found
    f, d, p, q = m.Flow.__table__.c, m.Deployment.__table__.c, m.WorkPool.__table__.c, m.WorkQueue.__table__.c
    flow_ids = {k[0] for k in missing}
    deployment_ids = {k[1] for k in missing if k[1] is not None}
    pool_names = {k[2] for k in missing if k[2] is not None}
    flows = {id_: related("flow", resource_id("flow", id_), name)
             for id_, name in session.execute(select(f.id, f.name).where(f.id.in_(flow_ids)))}
    # A scheduler pass asks for 500 deployments at once.
    deployments = {id_: related("deployment", resource_id("deployment", id_), name) for id_, name in session.execute(
        select(d.id, d.name).where(among(d.id, deployment_ids, session.get_bind().dialect.name)))
    } if deployment_ids else {}
    pools = {row.name: related("work-pool", resource_id("work-pool", row.id), row.name,
                               **{f"{PREFIX}.work-pool.type": row.type})
             for row in session.execute(select(p.id, p.name, p.type).where(p.name.in_(pool_names)))}
    queues = {(row.pool_name, row.name): related("work-queue", resource_id("work-queue", row.id), row.name)
              for row in session.execute(
        select(p.name.label("pool_name"), q.name, q.id).join_from(m.WorkQueue, m.WorkPool, p.id == q.pool_id).where(
            tuple_(p.name, q.name).in_(list({(k[2], k[3]) for k in missing if k[2] is not None and k[3] is not None}))))
    } if pool_names else {}
    # The parts are shared by the contexts (and the events) that name the same flow, pool, queue.
    for key in missing:
        flow_id, deployment_id, pool_name, queue_name = key
        context = RunContext(flow=flows.get(flow_id), deployment=deployments.get(deployment_id),
                             queue=queues.get((pool_name, queue_name)), pool=pools.get(pool_name))
        _contexts.put(scope, key, context)
        found[key] = context
    return found


def _state(type_: str, name: str, message: str | None) -> dict[str, str]:
    out = {"type": str(type_), "name": name}
    if message:
        out["message"] = message[:MESSAGE_LIMIT]
    return out


def _run_event_parts(run: Mapping[str, Any], context: RunContext, before: dict[str, str] | None,
                     ) -> tuple[str, dict[str, str], list[dict[str, str]], dict[str, Any]]:
    """A run's state event's name, resource, related resources and payload."""
    state_type, state_name = str(run["state_type"]), run["state_name"]
    labels = {f"{PREFIX}.state-type": state_type, f"{PREFIX}.state-name": state_name,
              f"{PREFIX}.run-count": str(run["run_count"])}
    parts = [context.flow, context.deployment, context.queue, context.pool]
    if run.get("worker_name") and run.get("work_pool_name"):
        parts.append(related("worker", worker_resource_id(run["work_pool_name"], run["worker_name"]),
                             run["worker_name"]))
    parts += [related("tag", resource_id("tag", tag)) for tag in sorted(set(run.get("tags") or []))]
    return (f"{PREFIX}.flow-run.{state_name}", resource(resource_id("flow-run", run["id"]), run["name"], **labels),
            [p for p in parts if p is not None],
            {"intended": {"from": before["type"] if before else None, "to": state_type},
             "initial_state": before,
             "validated_state": _state(state_type, state_name, run.get("state_message"))})


def _run_event(run: Mapping[str, Any], context: RunContext, *, event_id: uuid.UUID,
               before: dict[str, str] | None, follows: uuid.UUID | None) -> EventIn:
    event, resource_, related_, payload = _run_event_parts(run, context, before)
    return EventIn.model_construct(id=event_id, occurred=run["state_timestamp"], event=event, resource=resource_,
                                   related=related_, payload=payload, follows=follows)


# The run's columns a state event reads (``_run_event`` and ``_key``): a transition's event copies
# only these of the run it returned, not all 28.
_EVENT_COLUMNS = ("id", "name", "flow_id", "deployment_id", "work_pool_name", "work_queue_name", "worker_name", "tags",
                  "run_count", "state_type", "state_name", "state_message", "state_timestamp")


def _key(run: Mapping[str, Any]) -> _ContextKey:
    return run["flow_id"], run.get("deployment_id"), run.get("work_pool_name"), run.get("work_queue_name")


def runs_created(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[EventIn]:
    """``orchestrator.flow-run.<first state name>`` of new runs (``new_runs.run_values`` rows), in
    bulk: a run's creation is its first state change."""
    contexts = _run_contexts(session, (_key(row) for row in rows))
    return [_run_event(row, contexts[_key(row)], event_id=derived_id(row["id"], "created"), before=None, follows=None)
            for row in rows]


def runs_created_rows(session: Session, rows: Sequence[Mapping[str, Any]], *,
                      received: dt.datetime | None = None) -> list[dict[str, Any]]:
    """``events.event_rows(runs_created(session, rows))``, built straight as those rows, for a
    statement that stores them (``new_runs``' on PostgreSQL): no ``EventIn`` made and taken apart
    again, and the ids' text derived without ``uuid5``'s ``UUID`` objects -- ~10 µs of the
    create-run route's thread (bench/RESULTS.md, issue 22, "round 9"). The same JSON document
    (``events.postgres_document`` writes a UUID as its text). Each row's run has its own id, so
    no event id repeats (which ``event_rows`` would drop). ``received``: now unless given."""
    contexts = _run_contexts(session, (_key(row) for row in rows))
    received = received or utcnow()
    out = []
    for row in rows:
        event, resource_, related_, payload = _run_event_parts(row, contexts[_key(row)], None)
        out.append({"id": derived_id_text(str(row["id"]), "created"), "occurred": row["state_timestamp"],
                    "received": received, "event": event, "resource_id": resource_[RESOURCE_ID],
                    "resource": resource_, "related": related_, "payload": payload, "follows": None})
    return out


class EarlierState(NamedTuple):
    """A ``flow_run_states`` row before a transition's own (``transitions._add_state`` reads them)."""

    id: int
    type: str
    name: str
    message: str | None
    timestamp: dt.datetime


def run_state_changed(session: Session, run: Any, state_id: int,
                      earlier: Sequence[EarlierState]) -> EventIn:
    """``orchestrator.flow-run.<state name>`` of a transition just written (``run``: its row,
    ``run_statements.RunRow``, which imports this module): ``state_id`` is its
    ``flow_run_states`` row, ``earlier`` the (at most two) rows before it, newest first; the first
    of them is the previous state, whose event this one follows (the run's creation event when
    it was the run's first state)."""
    previous = earlier[0] if earlier else None
    follows = None
    if previous is not None:
        follows = derived_id(run.id, "created") if len(earlier) == 1 else derived_id(run.id, previous.id)
    values = {key: getattr(run, key) for key in _EVENT_COLUMNS}
    context = _run_contexts(session, [_key(values)])[_key(values)]
    return _run_event(values, context, event_id=derived_id(run.id, state_id),
                      before=_state(previous.type, previous.name, previous.message) if previous else None,
                      follows=follows)


# --- deployments, schedules, work pools, queues, workers ---------------------------------------


def _changes_payload(changes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {"updated_fields": sorted(changes), "updates": {k: dict(v) for k, v in changes.items()}}


def deployment_event(deployment: m.Deployment, action: str, *, flow_name: str | None = None,
                     changes: Mapping[str, Mapping[str, Any]] | None = None) -> EventIn:
    """``orchestrator.deployment.<created|updated|deleted|paused|resumed>``; ``updated`` carries
    ``{"updated_fields": [...], "updates": {field: {"from", "to"}}}``."""
    parts = [related("flow", resource_id("flow", deployment.flow_id), flow_name)]
    return EventIn(event=f"{PREFIX}.deployment.{action}",
                   resource=resource(resource_id("deployment", deployment.id), deployment.name),
                   related=parts, payload=_changes_payload(changes) if changes else {})


def schedule_event(row: m.DeploymentSchedule, deployment: m.Deployment, action: str,
                   changes: Mapping[str, Mapping[str, Any]] | None = None) -> EventIn:
    """``orchestrator.schedule.<created|updated|deleted|paused|resumed>`` of a deployment's schedule."""
    return EventIn(event=f"{PREFIX}.schedule.{action}",
                   resource=resource(resource_id("schedule", row.id), row.slug),
                   related=[related("deployment", resource_id("deployment", deployment.id), deployment.name)],
                   payload={"schedule": {**row.schedule, "timezone": row.timezone}, "active": row.active,
                            **(_changes_payload(changes) if changes else {})})


def _pool_resource(pool: m.WorkPool) -> dict[str, str]:
    return resource(resource_id("work-pool", pool.id), pool.name, **{f"{PREFIX}.work-pool.type": pool.type})


def work_pool_event(pool: m.WorkPool, action: str, *, changes: Mapping[str, Mapping[str, Any]] | None = None,
                    event_id: uuid.UUID | None = None, occurred: dt.datetime | None = None) -> EventIn:
    """``orchestrator.work-pool.<created|updated|deleted|paused|resumed|ready|not-ready>``."""
    extra = {k: v for k, v in (("id", event_id), ("occurred", occurred)) if v is not None}
    return EventIn(event=f"{PREFIX}.work-pool.{action}", resource=_pool_resource(pool),
                   payload=_changes_payload(changes) if changes else {}, **extra)


def work_queue_event(queue: m.WorkQueue, pool: m.WorkPool, action: str, *,
                     changes: Mapping[str, Mapping[str, Any]] | None = None, event_id: uuid.UUID | None = None,
                     occurred: dt.datetime | None = None) -> EventIn:
    """``orchestrator.work-queue.<created|updated|deleted|paused|resumed|ready|not-ready>``."""
    extra = {k: v for k, v in (("id", event_id), ("occurred", occurred)) if v is not None}
    return EventIn(event=f"{PREFIX}.work-queue.{action}",
                   resource=resource(resource_id("work-queue", queue.id), queue.name),
                   related=[{**_pool_resource(pool), "orchestrator.resource.role": "work-pool"}],
                   payload=_changes_payload(changes) if changes else {}, **extra)


def worker_event(pool: m.WorkPool, worker: m.Worker, action: str, *, event_id: uuid.UUID,
                 occurred: dt.datetime, last_heartbeat: dt.datetime | None = None) -> EventIn:
    """``orchestrator.worker.<online|offline>``."""
    payload = {} if last_heartbeat is None else {"last_heartbeat": last_heartbeat.isoformat()}
    return EventIn(id=event_id, occurred=occurred, event=f"{PREFIX}.worker.{action}",
                   resource=resource(worker_resource_id(pool.name, worker.name), worker.name,
                                     **{f"{PREFIX}.worker.id": str(worker.id)}),
                   related=[{**_pool_resource(pool), "orchestrator.resource.role": "work-pool"}], payload=payload)


def field_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"from": old, "to": new}}`` of the fields whose value changed."""
    return {key: {"from": before.get(key), "to": value} for key, value in after.items() if before.get(key) != value}


def split_pause(changes: dict[str, dict[str, Any]], field: str = "paused") -> tuple[str | None, dict[str, Any]]:
    """A pause flag's change is its own event (paused / resumed); the rest is ``updated``.
    ``field="active"`` reads a schedule's flag (active false = paused)."""
    rest = {k: v for k, v in changes.items() if k != field}
    if field not in changes:
        return None, rest
    on = bool(changes[field]["to"])
    paused = on if field == "paused" else not on
    return ("paused" if paused else "resumed"), rest


def in_pools(session: Session, pool_ids: Iterable[uuid.UUID]) -> list[m.WorkPool]:
    ids = list(set(pool_ids))
    return list(session.scalars(select(m.WorkPool).where(and_(m.WorkPool.id.in_(ids))))) if ids else []
