"""``emit_event``: a flow, a task or any script says that something happened, without waiting.

The event is checked here, on the caller's thread (a bad one raises ``InvalidInput`` naming the
field, where the mistake is), then queued with the process's emitter (``orchestrator.emitting``),
which sends it in the background: batched, kept across an API outage, flushed at exit. Inside a
flow run the run's flow-run, flow, deployment, tags (and task run, inside a task) are added to
``related``, as Prefect does, unless the caller already names them.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from orchestrator.emitting import default_emitter
from orchestrator.errors import InvalidInput
from orchestrator.sdk import running

if TYPE_CHECKING:
    from orchestrator.schemas.events import EventIn


def emit_event(event: str, resource: dict[str, str], related: list[dict[str, str]] | None = None,
               payload: dict[str, Any] | None = None, id: uuid.UUID | None = None,
               follows: uuid.UUID | None = None) -> EventIn:
    """Record that ``event`` happened to ``resource`` (labels with ``orchestrator.resource.id``);
    returns the event as it will be sent (its ``id`` can be another event's ``follows``). Never
    waits on the network: the event is sent in the background and a full outage only delays it.

    Raises ``InvalidInput`` naming the field when the event is malformed (no resource id, a
    related resource without a role, a payload over 1 MB as JSON, ...)."""
    from pydantic import ValidationError
    from pydantic_core import PydanticSerializationError

    from orchestrator.schemas.events import EventIn

    fields: dict[str, Any] = {"event": event, "resource": resource, "related": _with_run(related or []),
                              "payload": payload if payload is not None else {}, "follows": follows}
    if id is not None:
        fields["id"] = id
    try:
        model = EventIn.model_validate(fields)
    except ValidationError as error:
        raise InvalidInput(f"emit_event: {_described(error)}") from None
    try:  # turned into JSON now: a payload the caller changes after this call is sent as it was
        wire = model.model_dump(mode="json")
    except PydanticSerializationError as error:
        raise InvalidInput(f"emit_event: payload: {error} (a payload is sent as JSON)") from None
    default_emitter().put(wire)
    return model


def _with_run(related: list[dict[str, str]]) -> list[dict[str, str]]:
    """``related`` and the resources of the flow run (and task run) this call is part of."""
    from orchestrator.schemas.events import RESOURCE_ID
    from orchestrator.schemas.events import related as labels

    context = running.current_flow()
    run = context.run if context is not None else None
    if run is None:  # a flow called directly, or no flow: there is no run to relate to
        return related
    extra = [labels("flow-run", f"orchestrator.flow-run.{run.id}", run.name),
             labels("flow", f"orchestrator.flow.{run.flow_id}", context.run_flow_name if context else None)]
    if run.deployment_id is not None:
        extra.append(labels("deployment", f"orchestrator.deployment.{run.deployment_id}"))
    task = running.current_task()
    if task is not None and task.task_run_id is not None:
        extra.append(labels("task-run", f"orchestrator.task-run.{task.task_run_id}", task.task.name))
    extra += [labels("tag", f"orchestrator.tag.{tag}") for tag in run.tags]
    named = {item.get(RESOURCE_ID) for item in related if isinstance(item, dict)}
    return [*related, *(item for item in extra if item[RESOURCE_ID] not in named)]


def _described(error: Any) -> str:
    """Pydantic's errors as one line, each with its field: ``related.0: a related resource needs ...``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
