"""What each action does when its automation fires (``schemas/actions.py`` says what each means).

Actions that change the database run inside the evaluator's transaction, each in a savepoint:
the firing, its actions and the cursor's advance commit together, so each action runs exactly
once per firing however the evaluator dies (and ``run-deployment`` also gives the run the
idempotency key ``automation <id>, action <i>, firing <id>``). A failing action rolls back its own
savepoint only and is recorded as ``orchestrator.automation.action.failed`` with the reason.

``call-webhook`` is an outgoing HTTP call: it cannot join a transaction, so the firing stores the
rendered request (``automation_calls``) and ``calls.py`` makes it after the commit, off the
evaluation thread, at most once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import schemas, storable
from orchestrator.errors import OrchestratorError
from orchestrator.schemas import actions as a
from orchestrator.schemas.events import RESOURCE_ID, EventIn
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub import DISPATCH, DUE, run_events
from orchestrator.server.services import deployments, events, flow_runs, transitions, work_pools
from orchestrator.server.triggers.after_commit import AfterCommit
from orchestrator.server.triggers.evaluation import Seen
from orchestrator.server.triggers.templating import Context, TemplateFailed, render_text, render_value


class ActionFailed(Exception):
    """The action could not be done; the reason goes into the ``.failed`` event."""


@dataclass
class Invocation:
    automation_id: uuid.UUID
    automation_name: str
    firing_id: uuid.UUID
    index: int
    event: Seen | None  # the triggering event
    labels: dict[str, str]
    context: Context
    after: AfterCommit

    @property
    def idempotency_key(self) -> str:
        return f"automation {self.automation_id}, action {self.index}, firing {self.firing_id}"


def _first(event: Seen | None, kind: str) -> uuid.UUID | None:
    """The first resource of ``kind`` among the event's (its own, then related, in order)."""
    if event is None:
        return None
    prefix = f"orchestrator.{kind}."
    for labels in [event.resource, *event.related]:
        rid = labels.get(RESOURCE_ID, "")
        if rid.startswith(prefix):
            try:
                return uuid.UUID(rid[len(prefix):])
            except ValueError:
                continue
    return None


def _target(action: Any, field_name: str, kind: str, event: Seen | None) -> uuid.UUID:
    if action.source == "selected":
        return getattr(action, field_name)  # type: ignore[no-any-return]
    found = _first(event, kind)
    if found is None:
        raise ActionFailed(f"no {kind} could be inferred from the triggering event")
    return found


def run_deployment(session: Session, action: a.RunDeployment, inv: Invocation) -> dict[str, Any]:
    deployment_id = _target(action, "deployment_id", "deployment", inv.event)
    parameters = render_value(action.parameters or {}, inv.context)
    request = schemas.FlowRunCreate(
        parameters=parameters, job_variables=action.job_variables or {}, idempotency_key=inv.idempotency_key,
        scheduled_time=utcnow() + action.schedule_after if action.schedule_after else None)
    run, created = flow_runs.create(session, deployment_id, request, publish=True)
    if created:
        inv.after.runs.append(run)
    return {"flow_run_id": str(run.id), "deployment_id": str(deployment_id), "parameters": parameters,
            "created": created}


def _set_paused(session: Session, action: Any, inv: Invocation, paused: bool) -> dict[str, Any]:
    if isinstance(action, a.PauseDeployment | a.ResumeDeployment):
        deployment_id = _target(action, "deployment_id", "deployment", inv.event)
        deployments.update(session, deployment_id, schemas.DeploymentUpdate(paused=paused))
        return {"deployment_id": str(deployment_id)}
    if isinstance(action, a.PauseWorkPool | a.ResumeWorkPool):
        pool_id = _target(action, "work_pool_id", "work-pool", inv.event)
        pool = session.get(m.WorkPool, pool_id)
        if pool is None:
            raise ActionFailed(f"work pool {pool_id} not found")
        work_pools.update(session, pool.name, schemas.WorkPoolUpdate(paused=paused))
        inv.after.hub.append((DISPATCH, DUE))
        return {"work_pool": pool.name}
    queue_id = _target(action, "work_queue_id", "work-queue", inv.event)
    queue = session.get(m.WorkQueue, queue_id)
    if queue is None:
        raise ActionFailed(f"work queue {queue_id} not found")
    pool_name = session.scalar(select(m.WorkPool.name).where(m.WorkPool.id == queue.pool_id)) or ""
    work_pools.update_queue(session, pool_name, queue.name, schemas.WorkQueueUpdate(paused=paused))
    inv.after.hub.append((DISPATCH, DUE))
    return {"work_pool": pool_name, "work_queue": queue.name}


def cancel_flow_run(session: Session, action: a.CancelFlowRun, inv: Invocation) -> dict[str, Any]:
    """The run named by the firing's ``for_each`` resource id when it is a run (a proactive
    ``for_each: [orchestrator.resource.id]`` trigger), else the triggering event's first run."""
    run_id: uuid.UUID | None = None
    labelled = inv.labels.get(RESOURCE_ID, "")
    if labelled.startswith("orchestrator.flow-run."):
        try:
            run_id = uuid.UUID(labelled.removeprefix("orchestrator.flow-run."))
        except ValueError:
            run_id = None
    run_id = run_id or _first(inv.event, "flow-run")
    if run_id is None:
        raise ActionFailed("no flow run could be inferred from the triggering event")
    run = transitions.cancel(session, run_id)
    inv.after.hub.extend(run_events(run))
    return {"flow_run_id": str(run_id), "state": str(run.state_type)}


def emit_event(session: Session, action: a.EmitEvent, inv: Invocation) -> dict[str, Any]:
    try:
        event = EventIn(event=render_text(action.event, inv.context),
                        resource=render_value(action.resource, inv.context),
                        related=render_value(action.related, inv.context),
                        payload=render_value(action.payload, inv.context))
    except ValueError as error:  # pydantic's ValidationError: the rendered event is not an event
        raise ActionFailed(f"the rendered event is invalid: {error}") from None
    events.record(session, [event])
    return {"emitted_event": str(event.id)}


def call_webhook(session: Session, action: a.CallWebhook, inv: Invocation) -> dict[str, Any]:
    request = {"url": render_text(action.url, inv.context), "method": action.method,
               "headers": {k: render_text(v, inv.context) for k, v in action.headers.items()},
               "body": render_text(action.body, inv.context), "timeout_seconds": action.timeout_seconds,
               "idempotency_key": inv.idempotency_key}
    if not request["url"].startswith(("http://", "https://")):
        raise ActionFailed(f"the rendered url {request['url'][:80]!r} is not an http(s) url")
    session.add(m.AutomationCall(firing_id=inv.firing_id, action_index=inv.index, automation_id=inv.automation_id,
                                 state="pending", request=request, created=utcnow(),
                                 context={"automation_name": inv.automation_name,
                                          "triggering_event": str(inv.event.id) if inv.event else None}))
    session.flush()
    inv.after.calls += 1
    return {"queued": True}


def do_nothing(session: Session, action: a.DoNothing, inv: Invocation) -> dict[str, Any]:
    return {}


RUNNERS: dict[type, Callable[[Session, Any, Invocation], dict[str, Any]]] = {
    a.RunDeployment: run_deployment,
    a.PauseDeployment: lambda s, act, inv: _set_paused(s, act, inv, True),
    a.ResumeDeployment: lambda s, act, inv: _set_paused(s, act, inv, False),
    a.PauseWorkPool: lambda s, act, inv: _set_paused(s, act, inv, True),
    a.ResumeWorkPool: lambda s, act, inv: _set_paused(s, act, inv, False),
    a.PauseWorkQueue: lambda s, act, inv: _set_paused(s, act, inv, True),
    a.ResumeWorkQueue: lambda s, act, inv: _set_paused(s, act, inv, False),
    a.CancelFlowRun: cancel_flow_run,
    a.EmitEvent: emit_event,
    a.CallWebhook: call_webhook,
    a.DoNothing: do_nothing,
}


def run(session: Session, action: Any, inv: Invocation) -> tuple[dict[str, Any], str | None]:
    """Do ``action`` in a savepoint: ``(details, None)``, or ``({}, reason)`` when it failed (its
    changes rolled back, the rest of the firing kept)."""
    if isinstance(action, a.DoNothing):
        return {}, None  # nothing to roll back: no savepoint
    after_before = (len(inv.after.runs), len(inv.after.hub), inv.after.calls)
    try:
        with session.begin_nested():
            return RUNNERS[type(action)](session, action, inv), None
    except (ActionFailed, TemplateFailed, OrchestratorError) as error:
        reason = str(error)
    except Exception as error:  # noqa: BLE001 -- an action's bug must not stop every automation
        reason = f"{type(error).__name__}: {error}"
    inv.after.runs[after_before[0]:] = []
    inv.after.hub[after_before[1]:] = []
    inv.after.calls = after_before[2]
    # An error's text can quote what a template rendered (a NUL, say): the .failed event that carries
    # it must be storable, or the whole pass would fail on it, again and again.
    return {}, storable.escaped(reason)


def when(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None
