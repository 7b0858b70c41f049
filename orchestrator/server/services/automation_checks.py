"""What an automation is checked for when it is saved, beyond its shape: that the targets its
actions name exist (a name becomes the id), and that it cannot trigger itself forever.

The loop guard asks, for each Reactive event trigger whose firing alone fires the automation,
whether an event the automation's own actions are certain to cause would fire it again (for the
events below said "once", only when the trigger counts one event at a time: ``threshold`` 1 or
``within`` 0 -- a higher threshold over a window ends the chain):

* ``run-deployment`` of deployment D: every run of D emits ``orchestrator.flow-run.Scheduled``,
  ``.Pending`` and ``.Running``, and ends ``.Completed``, ``.Failed`` or ``.Crashed`` (once); the trigger
  is tried against those events of a run of D (its flow, deployment, work pool and tags as
  related resources). With ``source: inferred`` the deployment is the triggering run's own, so
  any deployment's run will do.
* ``emit-event`` (once): the event it emits (a templated label is taken to match anything; a templated
  event name is not checked).
* Any action (once): the ``orchestrator.automation.triggered`` event of the automation itself (an empty
  ``expect`` with an empty ``match`` counts every event, that one too: Prefect's issue 11470).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.errors import InvalidInput
from orchestrator.schemas import actions as a
from orchestrator.schemas.automations import AutomationCreate
from orchestrator.schemas.events import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE
from orchestrator.schemas.templates import is_template
from orchestrator.schemas.triggers import EventTrigger, label_matches, lone_firers
from orchestrator.server.db import models as m

ACTION_LISTS = ("actions", "actions_on_trigger", "actions_on_resolve")
EVERY_RUN = {"Scheduled": "SCHEDULED", "Pending": "PENDING", "Running": "RUNNING"}
RUN_ENDS = {"Completed": "COMPLETED", "Failed": "FAILED", "Crashed": "CRASHED"}
Loc = tuple[str | int, ...]


def _each_action(definition: AutomationCreate) -> Iterator[tuple[str, int, Any]]:
    for field in ACTION_LISTS:
        for index, action in enumerate(getattr(definition, field)):
            yield field, index, action


def _problem(loc: Loc, msg: str, kind: str) -> InvalidInput:
    return InvalidInput([{"loc": list(loc), "msg": msg, "type": kind}])


# --- targets -----------------------------------------------------------------------------------


def resolve_targets(session: Session, definition: AutomationCreate, *, loc: Loc) -> None:
    """Each selected target exists; one named by name gets its id (in ``definition``)."""
    for field, index, action in _each_action(definition):
        at = (*loc, field, index)
        if getattr(action, "source", "inferred") != "selected":
            continue
        if isinstance(action, a.RunDeployment | a.PauseDeployment | a.ResumeDeployment):
            action.deployment_id = _deployment_id(session, action, at)
        elif isinstance(action, a.PauseWorkPool | a.ResumeWorkPool):
            pool = (session.get(m.WorkPool, action.work_pool_id) if action.work_pool_id else
                    session.scalar(select(m.WorkPool).where(m.WorkPool.name == action.work_pool_name)))
            if pool is None:
                raise _problem((*at, "work_pool_id" if action.work_pool_id else "work_pool_name"),
                               f"work pool {action.work_pool_id or action.work_pool_name!r} not found", "not_found")
            action.work_pool_id, action.work_pool_name = pool.id, pool.name
        elif isinstance(action, a.PauseWorkQueue | a.ResumeWorkQueue):
            queue = (session.get(m.WorkQueue, action.work_queue_id) if action.work_queue_id else session.scalar(
                select(m.WorkQueue).join(m.WorkPool, m.WorkPool.id == m.WorkQueue.pool_id)
                .where(m.WorkPool.name == action.work_pool_name, m.WorkQueue.name == action.work_queue_name)))
            if queue is None:
                shown = action.work_queue_id or f"{action.work_pool_name}/{action.work_queue_name}"
                raise _problem((*at, "work_queue_id" if action.work_queue_id else "work_queue_name"),
                               f"work queue {str(shown)!r} not found", "not_found")
            action.work_queue_id = queue.id


def _deployment_id(session: Session, action: Any, at: Loc) -> uuid.UUID:
    if action.deployment is not None:
        flow_name, _, name = action.deployment.partition("/")
        found = session.scalar(select(m.Deployment.id).join(m.Flow, m.Flow.id == m.Deployment.flow_id)
                               .where(m.Flow.name == flow_name, m.Deployment.name == name))
        if found is None:
            raise _problem((*at, "deployment"), f"deployment {action.deployment!r} not found", "not_found")
        if action.deployment_id is not None and action.deployment_id != found:
            raise _problem((*at, "deployment_id"), f"deployment_id is not the id of {action.deployment!r}", "target")
        return found
    if session.get(m.Deployment, action.deployment_id) is None:
        raise _problem((*at, "deployment_id"), f"deployment {action.deployment_id} not found", "not_found")
    return action.deployment_id  # type: ignore[no-any-return]


# --- loops -------------------------------------------------------------------------------------


def _fits(spec: dict[str, Any], labels: dict[str, str]) -> bool:
    """``spec`` matches ``labels``; a templated label value may become anything, so it matches."""
    return all(key in labels and (is_template(labels[key]) or label_matches(labels[key], patterns))
               for key, patterns in spec.items())


def _fires_on(trigger: EventTrigger, name: str, resource: dict[str, str], related: list[dict[str, str]]) -> bool:
    return (trigger.expects(name) and _fits(trigger.match, resource)
            and all(any(_fits(spec, labels) for labels in related) for spec in trigger.related_specs()))


def _counts_one_at_a_time(trigger: EventTrigger) -> bool:
    return trigger.threshold == 1 or not trigger.within


def refuse_loops(session: Session, automation_id: uuid.UUID, definition: AutomationCreate, *, loc: Loc) -> None:
    """A 422 naming the action when ``definition`` would trigger itself forever (module docstring)."""
    firers = [t for t in lone_firers(definition.trigger) if t.posture == "Reactive"]
    if not firers:
        return
    own = {RESOURCE_ID: f"orchestrator.automation.{automation_id}", RESOURCE_NAME: definition.name}
    if any(_fires_on(t, "orchestrator.automation.triggered", own, []) for t in firers if _counts_one_at_a_time(t)):
        raise _problem((*loc, "trigger"), "this automation would trigger itself forever: its trigger accepts its own "
                       "'orchestrator.automation.triggered' event (an empty expect and match count every event); "
                       "name the events in expect, or narrow match", "loop")
    for field, index, action in _each_action(definition):
        why = _loop_of(session, action, firers)
        if why is not None:
            raise _problem((*loc, field, index), f"this automation would trigger itself forever: {why}", "loop")


def _loop_of(session: Session, action: Any, firers: list[EventTrigger]) -> str | None:
    if isinstance(action, a.RunDeployment):
        related = [] if action.source == "inferred" else _run_related(session, action.deployment_id)
        if related is None:
            return None
        target = "the triggering run's own deployment" if action.source == "inferred" else "its deployment"
        for trigger in firers:
            # Each run emits each of these once: a threshold over a window stops the chain of ends.
            for state, kind in {**EVERY_RUN, **(RUN_ENDS if _counts_one_at_a_time(trigger) else {})}.items():
                resource = {RESOURCE_ID: f"orchestrator.flow-run.{uuid.uuid4()}", "orchestrator.state-name": state,
                            "orchestrator.state-type": kind}
                if _fires_on(trigger, f"orchestrator.flow-run.{state}", resource,
                             related if action.source == "selected" else []) or (
                        action.source == "inferred" and _fires_on_some_run(trigger, state, resource)):
                    return (f"it runs {target}, whose run emits 'orchestrator.flow-run.{state}', which its trigger "
                            "accepts; narrow the trigger (match_related on another deployment, a state the new "
                            "runs cannot reach, or a threshold over a window)")
    if isinstance(action, a.EmitEvent) and not is_template(action.event):
        for trigger in firers:
            if _counts_one_at_a_time(trigger) and _fires_on(trigger, action.event, action.resource, action.related):
                return f"it emits '{action.event}', which its own trigger accepts"
    return None


def _fires_on_some_run(trigger: EventTrigger, state: str, resource: dict[str, str]) -> bool:
    """For an inferred deployment: some deployment's run would do, whatever ``match_related`` names."""
    return trigger.expects(f"orchestrator.flow-run.{state}") and _fits(trigger.match, resource)


def _run_related(session: Session, deployment_id: uuid.UUID | None) -> list[dict[str, str]] | None:
    """The related resources of a flow-run event of a run of the deployment (None: no deployment)."""
    deployment = session.get(m.Deployment, deployment_id) if deployment_id else None
    if deployment is None:
        return None
    flow_name = session.scalar(select(m.Flow.name).where(m.Flow.id == deployment.flow_id)) or ""
    pool = session.scalar(select(m.WorkPool).where(m.WorkPool.name == deployment.work_pool_name))
    related = [
        {RESOURCE_ID: f"orchestrator.flow.{deployment.flow_id}", RESOURCE_ROLE: "flow", RESOURCE_NAME: flow_name},
        {RESOURCE_ID: f"orchestrator.deployment.{deployment.id}", RESOURCE_ROLE: "deployment",
         RESOURCE_NAME: deployment.name},
    ]
    if pool is not None:
        related.append({RESOURCE_ID: f"orchestrator.work-pool.{pool.id}", RESOURCE_ROLE: "work-pool",
                        RESOURCE_NAME: pool.name, "orchestrator.work-pool.type": pool.type})
    related += [{RESOURCE_ID: f"orchestrator.tag.{tag}", RESOURCE_ROLE: "tag"} for tag in deployment.tags]
    return related
