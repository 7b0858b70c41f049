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
import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from orchestrator.schemas.actions import Action
from orchestrator.schemas.automations import Automation
from orchestrator.schemas.base import DEFERRED
from orchestrator.schemas.events import RESOURCE_ID, RESOURCE_ROLE, EventIn, related, resource
from orchestrator.schemas.triggers import EventTrigger
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import deployments as deployment_service
from orchestrator.server.services import events
from orchestrator.server.services import flow_runs as run_service
from orchestrator.server.triggers import actions
from orchestrator.server.triggers.evaluation import Seen
from orchestrator.server.triggers.templating import Context, Labels

ACTIONS: TypeAdapter[list[Any]] = TypeAdapter(list[Action], config=DEFERRED)  # built at first use


@dataclass(frozen=True)
class Firing:
    id: uuid.UUID
    automation: Automation
    triggered: dt.datetime
    labels: dict[str, str]
    event: Seen | None
    own: Own | None = None  # ``Own.of(automation)`` when the caller keeps it


def automation_resource(automation: Automation) -> dict[str, str]:
    trigger = automation.trigger
    extra = {"orchestrator.trigger-type": trigger.type}
    if isinstance(trigger, EventTrigger):
        extra["orchestrator.posture"] = trigger.posture
    return resource(f"orchestrator.automation.{automation.id}", automation.name, **extra)


@dataclass(frozen=True)
class Own:
    """An automation's labels as the resource of its events, as values and as JSON text."""

    labels: dict[str, str]
    json: str
    id_json: str

    @classmethod
    def of(cls, automation: Automation) -> Own:
        labels = automation_resource(automation)
        return cls(labels, json.dumps(labels), json.dumps(labels[RESOURCE_ID]))


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


# The firings' events are written as JSON text, a row at a time, the rows ``events.record_encoded``
# stores once per pass, from parts encoded once: an automation's labels, and per triggering event
# its quote and its link. One event fires many automations (10 per named event in
# bench/triggers.py) and its quote is most of a triggered event: encoding it again per firing,
# and keeping two rows of dicts per firing alive until the pass's insert (which the garbage
# collector went over again and again), was half of the evaluator's time.
_TRIGGERED = json.dumps("orchestrator.automation.triggered")
_EXECUTED = json.dumps("orchestrator.automation.action.executed")


def _row(event_id: str, occurred: str, received: str, name: str, own: Own, links: str, payload: str,
         follows: str | None) -> str:
    """An event the evaluator makes of parts already checked, as the JSON text of a row of
    ``events.event_rows``: an automation's own labels and a stored event (storable, its payload
    within bound) or an action's details (storable: each action's input was validated). Not
    validated again: it costs more than the rest of a firing, and a firing must never fail because
    the event it quotes is near the payload bound. ``event_id``, ``follows`` (UUIDs) and the times
    (ISO 8601) are text, ``name``, ``links`` and ``payload`` JSON."""
    follows_json = f'"{follows}"' if follows else "null"
    return (f'{{"id":"{event_id}","occurred":"{occurred}","received":"{received}","event":{name},'
            f'"resource_id":{own.id_json},"resource":{own.json},"related":{links},"payload":{payload},'
            f'"follows":{follows_json}}}')


@dataclass(frozen=True)
class _Quote:
    """A triggering event as its firings' events quote it."""

    event: str  # JSON of ``Seen.as_json``
    cause: list[dict[str, str]]  # the link to it
    cause_json: str
    cause_tail: str  # ``cause_json`` as the end of a longer list


def _quote(event: Seen | None, after: actions.AfterCommit) -> _Quote:
    if event is None:
        return _Quote("null", [], "[]", "]")
    quote = after.quotes.get(event.id)
    if quote is None:
        cause = [related("triggering-event", f"orchestrator.event.{event.id}")]
        cause_json = json.dumps(cause)
        quote = after.quotes[event.id] = _Quote(json.dumps(event.as_json()), cause, cause_json, f",{cause_json[1:]}")
    return quote


def _json_value(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)  # UUIDs, as events.record does


def record(session: Session, firing: Firing, after: actions.AfterCommit) -> None:
    """The firing's actions, in the caller's transaction; its events go to ``after.events``, which
    the evaluator records once for the whole pass (one statement for thousands of firings). Runs
    once per firing, thousands of times a second: what does not depend on the firing is made once
    (``Own``, ``_quote``), and the common action (one that adds no details) is written without
    the JSON encoder."""
    automation = firing.automation
    own = firing.own or Own.of(automation)
    quote = _quote(firing.event, after)
    fid = str(firing.id)
    received = utcnow()
    received_iso = received.isoformat()
    labels = json.dumps(firing.labels) if firing.labels else "{}"
    payload_json = f'{{"triggering_labels":{labels},"triggering_event":{quote.event}}}'
    after.events.append(_row(fid, firing.triggered.isoformat(), received_iso, _TRIGGERED, own, quote.cause_json,
                             payload_json, None))
    after.names.add("orchestrator.automation.triggered")
    todo = [(action, firing.event) for action in automation.actions]
    if automation.actions_on_trigger:
        as_seen = Seen(id=firing.id, occurred=firing.triggered, event="orchestrator.automation.triggered",
                       resource=own.labels, related=quote.cause, payload=json.loads(payload_json), received=received)
        todo += [(action, as_seen) for action in automation.actions_on_trigger]
    contexts: dict[uuid.UUID | None, Context] = {}
    firing_link = related("automation-triggered-event", f"orchestrator.event.{fid}")
    for index, (action, event) in enumerate(todo):
        details: dict[str, Any]
        if action.type == "do-nothing":  # nothing to render or roll back
            details, reason = {}, None
        else:
            key = event.id if event else None
            if key not in contexts:
                contexts[key] = _context(session, firing, event)
            inv = actions.Invocation(automation_id=automation.id, automation_name=automation.name,
                                     firing_id=firing.id, index=index, event=event, labels=firing.labels,
                                     context=contexts[key], after=after)
            details, reason = actions.run(session, action, inv)
        if reason is None and not details:
            done = received_iso if action.type == "do-nothing" else utcnow().isoformat()
            after.events.append(_row(
                str(uuid.uuid4()), done, done, _EXECUTED, own,
                f'[{{"{RESOURCE_ID}":"orchestrator.event.{fid}","{RESOURCE_ROLE}":"automation-triggered-event"}}'
                f"{quote.cause_tail}",
                f'{{"action_index":{index},"action_type":"{action.type}","firing":"{fid}"}}', fid))
            after.names.add("orchestrator.automation.action.executed")
            continue
        payload = {"action_index": index, "action_type": action.type, "firing": fid, **details}
        links = [firing_link, *quote.cause]
        if "flow_run_id" in details:
            links.append(related("flow-run", f"orchestrator.flow-run.{details['flow_run_id']}"))
        if reason is None:
            if action.type == "call-webhook":
                continue  # its outcome is recorded when the call is made (calls.py)
            done = utcnow().isoformat()
            after.events.append(_row(str(uuid.uuid4()), done, done, _EXECUTED, own, json.dumps(links),
                                     json.dumps(payload, default=_json_value), fid))
            after.names.add("orchestrator.automation.action.executed")
        else:  # the reason is any error's text: validated as any event
            failed = EventIn(event="orchestrator.automation.action.failed", resource=own.labels, related=links,
                             payload={**payload, "reason": reason}, follows=firing.id)
            after.events += [json.dumps(row, default=_json_value) for row in events.event_rows([failed])]
            after.names.add(failed.event)
