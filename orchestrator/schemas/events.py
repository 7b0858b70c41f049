"""Events: what happened, to which resource, as Prefect's events are shaped.

An event names what happened (``event``, e.g. ``orchestrator.flow-run.Completed``), the resource it
happened to (labels, among them ``orchestrator.resource.id``), related resources (each with an
``orchestrator.resource.role``: flow, deployment, work-pool, ...), a JSON ``payload``, and optionally
the id of the event it ``follows``. The client chooses ``id``; the server drops a second event with
the same id. ``received`` is set by the server.

Prefect's names are accepted on input (``prefect_names``): a leading ``prefect.`` in an event name,
a label key or a resource id means ``orchestrator.``, so a Prefect user's definitions work as
written.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from orchestrator.schemas.base import InModel, Instant, OutModel

RESOURCE_ID = "orchestrator.resource.id"
RESOURCE_ROLE = "orchestrator.resource.role"
RESOURCE_NAME = "orchestrator.resource.name"

# Bounds (Prefect's, except that exceeding one is a 422 naming it here, never a silent drop).
MAX_EVENT_NAME = 1024
MAX_LABELS = 500  # per resource
MAX_LABEL_LENGTH = 1024  # a label's key or value
MAX_RELATED = 100
MAX_PAYLOAD_BYTES = 1_000_000  # the payload as compact JSON
MAX_BATCH = 1000  # events in one POST


def prefect_names(text: str) -> str:
    """``prefect.x`` means ``orchestrator.x`` (event names, label keys, resource ids)."""
    return "orchestrator." + text.removeprefix("prefect.") if text.startswith("prefect.") else text


def _check_labels(labels: dict[str, str], *, role: bool) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise PydanticCustomError("labels", f"has {len(labels)} labels, the most is {MAX_LABELS}")
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_LENGTH or len(value) > MAX_LABEL_LENGTH:
            raise PydanticCustomError("labels", f"label keys must be 1-{MAX_LABEL_LENGTH} characters and values "
                                                f"at most {MAX_LABEL_LENGTH} (label {key[:40]!r})")
        key = prefect_names(key)
        out[key] = prefect_names(value) if key == RESOURCE_ID else value
    if not out.get(RESOURCE_ID):
        raise PydanticCustomError("labels", f"a resource needs the label {RESOURCE_ID!r} "
                                            "(e.g. 'orchestrator.flow-run.<id>' or 'my.app.thing')")
    if role and not out.get(RESOURCE_ROLE):
        raise PydanticCustomError("labels", f"a related resource needs the label {RESOURCE_ROLE!r} "
                                            "(flow, deployment, work-pool, tag, ...)")
    return out


Resource = Annotated[dict[str, str], AfterValidator(lambda labels: _check_labels(labels, role=False))]
RelatedResource = Annotated[dict[str, str], AfterValidator(lambda labels: _check_labels(labels, role=True))]
EventName = Annotated[str, Field(min_length=1, max_length=MAX_EVENT_NAME), AfterValidator(prefect_names)]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class EventIn(InModel):
    """An event as a client sends it (``POST /api/events``, ``emit_event``)."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred: Instant = Field(default_factory=_now)
    event: EventName
    resource: Resource
    related: list[RelatedResource] = Field(default_factory=list, max_length=MAX_RELATED)
    payload: dict[str, Any] = Field(default_factory=dict)
    follows: uuid.UUID | None = None

    @model_validator(mode="after")
    def _bounded_payload(self) -> EventIn:
        size = len(json.dumps(self.payload, separators=(",", ":"), default=str).encode())
        if size > MAX_PAYLOAD_BYTES:
            raise PydanticCustomError("payload", f"payload is {size} bytes as JSON, the most is {MAX_PAYLOAD_BYTES}")
        return self

    @property
    def resource_id(self) -> str:
        return self.resource[RESOURCE_ID]


class Event(OutModel):
    """An event as the server keeps it: what was sent, and when the server ``received`` it."""

    id: uuid.UUID
    occurred: dt.datetime
    event: str
    resource: dict[str, str]
    related: list[dict[str, str]]
    payload: dict[str, Any]
    follows: uuid.UUID | None = None
    received: dt.datetime


def resource(resource_id: str, name: str | None = None, **labels: str) -> dict[str, str]:
    """Labels of a resource: ``resource("orchestrator.flow-run.<id>", "my-run")``."""
    out = {RESOURCE_ID: resource_id, **labels}
    if name is not None:
        out[RESOURCE_NAME] = name
    return out


def related(role: str, resource_id: str, name: str | None = None, **labels: str) -> dict[str, str]:
    """Labels of a related resource: ``related("deployment", "orchestrator.deployment.<id>", "nightly")``."""
    return {**resource(resource_id, name, **labels), RESOURCE_ROLE: role}
