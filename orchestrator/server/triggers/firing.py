"""An automation fired: record ``orchestrator.automation.triggered``, run its actions, and record
each one's ``orchestrator.automation.action.executed`` or ``.failed`` -- all in the evaluator's
transaction (``actions.py`` says why that makes each action run exactly once per firing).

As in Prefect: ``actions`` see the triggering event; ``actions_on_trigger`` see the
``automation.triggered`` event as theirs; an action's index counts across both lists (it is part
of the idempotency key). ``actions_on_resolve`` never run: event triggers never resolve (Prefect's
open-source server behaves the same).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from orchestrator.schemas.actions import Action
from orchestrator.schemas.automations import Automation
from orchestrator.schemas.events import RESOURCE_ID, EventIn, related, resource
from orchestrator.schemas.triggers import EventTrigger
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import deployments as deployment_service
from orchestrator.server.services import events
from orchestrator.server.services import flow_runs as run_service
from orchestrator.server.triggers import actions
from orchestrator.server.triggers.evaluation import Seen
from orchestrator.server.triggers.templating import Context, Labels

ACTIONS: TypeAdapter[list[Any]] = TypeAdapter(list[Action])


@dataclass(frozen=True)
class Firing:
    id: uuid.UUID
    automation: Automation
    triggered: dt.datetime
    labels: dict[str, str]
    event: Seen | None


def automation_resource(automation: Automation) -> dict[str, str]:
    trigger = automation.trigger
    extra = {"orchestrator.trigger-type": trigger.type}
    if isinstance(trigger, EventTrigger):
        extra["orchestrator.posture"] = trigger.posture
    return resource(f"orchestrator.automation.{automation.id}", automation.name, **extra)


def _event_view(event: Seen | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"id": event.id, "occurred": event.occurred, "event": event.event, "resource": Labels(event.resource),
            "related": [Labels(r) for r in event.related], "payload": event.payload, "follows": event.follows,
            "received": event.received}


def _context(session: Session, firing: Firing, event: Seen | None) -> Context:
    def deployment() -> Any:
        found = actions._first(event, "deployment")
        row = session.get(m.Deployment, found) if found else None
        return deployment_service.to_schema(session, row).model_dump(mode="json") if row else None

    def flow_run() -> Any:
        found = actions._first(event, "flow-run")
        row = session.get(m.FlowRun, found) if found else None
        return run_service.to_schema(row).model_dump(mode="json") if row else None

    values = {"event": _event_view(event), "labels": Labels(firing.labels),
              "firing": {"id": firing.id, "triggered": firing.triggered, "labels": firing.labels},
              "automation": {"id": firing.automation.id, "name": firing.automation.name}}
    return Context(values, {"deployment": deployment, "flow_run": flow_run})


_NO_CONTEXT = Context({}, {})  # do-nothing renders no template: no context built for it


def _server_event(event_id: uuid.UUID, occurred: dt.datetime, name: str, own: dict[str, str],
                  links: list[dict[str, str]], payload: dict[str, Any], follows: uuid.UUID | None) -> dict[str, Any]:
    """An event the evaluator makes of parts already checked, as the row ``events.record_rows``
    stores: an automation's own labels and a stored event (storable, its payload within bound) or
    an action's details (storable: each action's input was validated). Not validated again: it
    costs more than the rest of a firing, and a firing must never fail because the event it quotes
    is near the payload bound."""
    return {"id": event_id, "occurred": occurred, "received": utcnow(), "event": name,
            "resource_id": own[RESOURCE_ID], "resource": own, "related": links, "payload": payload,
            "follows": follows}


def record(session: Session, firing: Firing, after: actions.AfterCommit) -> None:
    """The firing's actions, in the caller's transaction; its events go to ``after.events``, which
    the evaluator records once for the whole pass (one statement for thousands of firings)."""
    automation = firing.automation
    own = automation_resource(automation)
    cause = [related("triggering-event", f"orchestrator.event.{firing.event.id}")] if firing.event else []
    triggered = _server_event(firing.id, firing.triggered, "orchestrator.automation.triggered", own, cause,
                              {"triggering_labels": firing.labels,
                               "triggering_event": firing.event.as_json() if firing.event else None}, None)
    after.events.append(triggered)
    todo = [(action, firing.event) for action in automation.actions]
    if automation.actions_on_trigger:
        as_seen = Seen(id=firing.id, occurred=firing.triggered, event=triggered["event"], resource=own,
                       related=cause, payload=triggered["payload"], received=triggered["received"])
        todo += [(action, as_seen) for action in automation.actions_on_trigger]
    contexts: dict[uuid.UUID | None, Context] = {}
    for index, (action, event) in enumerate(todo):
        key = event.id if event else None
        if action.type == "do-nothing":
            context = _NO_CONTEXT
        elif key not in contexts:
            context = contexts[key] = _context(session, firing, event)
        else:
            context = contexts[key]
        inv = actions.Invocation(automation_id=automation.id, automation_name=automation.name, firing_id=firing.id,
                                 index=index, event=event, labels=firing.labels, context=context, after=after)
        details, reason = actions.run(session, action, inv)
        payload = {"action_index": index, "action_type": action.type, "firing": str(firing.id), **details}
        links = [related("automation-triggered-event", f"orchestrator.event.{firing.id}"), *cause]
        if "flow_run_id" in details:
            links.append(related("flow-run", f"orchestrator.flow-run.{details['flow_run_id']}"))
        if reason is None:
            if action.type == "call-webhook":
                continue  # its outcome is recorded when the call is made (calls.py)
            after.events.append(_server_event(uuid.uuid4(), utcnow(), "orchestrator.automation.action.executed",
                                              own, links, payload, firing.id))
        else:  # the reason is any error's text: validated as any event
            failed = EventIn(event="orchestrator.automation.action.failed", resource=own, related=links,
                             payload={**payload, "reason": reason}, follows=firing.id)
            after.events += events.event_rows([failed])
