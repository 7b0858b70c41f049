"""Events: what happened, to which resource, as Prefect's events are shaped.

An event names what happened (``event``, e.g. ``orchestrator.flow-run.Completed``), the resource it
happened to (labels, among them ``orchestrator.resource.id``), related resources (each with an
``orchestrator.resource.role``: flow, deployment, work-pool, ...), a JSON ``payload``, and optionally
the id of the event it ``follows``. The client chooses ``id``; the server drops a second event with
the same id. ``received`` is set by the server.

Prefect's names are accepted on input (``prefect_names``): a leading ``prefect.`` in an event name,
a label key or a resource id means ``orchestrator.``, so a Prefect user's definitions work as
written.

Reading events (``Event``, the filters, ``EventQuery``, ``EventPage``) is ``schemas/event_queries.py``'s,
which builds on this module: a server, which records events from its start, imports it (and builds
its models) only when events are read.
"""

import datetime as dt
import time
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError, PydanticSerializationError, to_json

from orchestrator import storable
from orchestrator.schemas.base import InModel, as_utc, new_dict, new_list

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
# Ours (Prefect bounds no time): an event from far ahead would sort after every real one in each
# query and stream page, and a trigger's window would wait for it. An hour covers any clock skew;
# more is a mistake, most often a local time sent as UTC.
MAX_OCCURRED_AHEAD = dt.timedelta(hours=1)


def prefect_names(text: str) -> str:
    """``prefect.x`` means ``orchestrator.x`` (event names, label keys, resource ids)."""
    return "orchestrator." + text.removeprefix("prefect.") if text.startswith("prefect.") else text


def _check_labels(labels: dict[str, str], *, role: bool) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise PydanticCustomError("labels", f"has {len(labels)} labels, the most is {MAX_LABELS}")
    prefect = False
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_LENGTH or len(value) > MAX_LABEL_LENGTH:
            raise PydanticCustomError("labels", f"label keys must be 1-{MAX_LABEL_LENGTH} characters and values "
                                                f"at most {MAX_LABEL_LENGTH} (label {key[:40]!r})")
        prefect = prefect or key.startswith("prefect.")
    if prefect:  # rare: most labels are written in our names, and are kept as they came (a new dict already)
        labels = {prefect_names(key): value for key, value in labels.items()}
    resource_id = labels.get(RESOURCE_ID)
    if not resource_id:
        raise PydanticCustomError("labels", f"a resource needs the label {RESOURCE_ID!r} "
                                            "(e.g. 'orchestrator.flow-run.<id>' or 'my.app.thing')")
    if resource_id.startswith("prefect."):
        labels = {**labels, RESOURCE_ID: prefect_names(resource_id)}
    if role and not labels.get(RESOURCE_ROLE):
        raise PydanticCustomError("labels", f"a related resource needs the label {RESOURCE_ROLE!r} "
                                            "(flow, deployment, work-pool, tag, ...)")
    return labels


def _check_resource(labels: dict[str, str]) -> dict[str, str]:
    return _check_labels(labels, role=False)


def _check_related(labels: dict[str, str]) -> dict[str, str]:
    return _check_labels(labels, role=True)


Resource = Annotated[dict[str, str], AfterValidator(_check_resource)]
RelatedResource = Annotated[dict[str, str], AfterValidator(_check_related)]
EventName = Annotated[str, Field(min_length=1, max_length=MAX_EVENT_NAME), AfterValidator(prefect_names)]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Horizon:
    """The latest ``occurred`` accepted, computed again at most once a second: ``datetime.now``
    costs a quarter of a microsecond, a third of the event's Python work; a bound a second stale
    on an hour changes nothing. Threads racing to refresh it write equally good values."""

    def __init__(self) -> None:
        self._limit = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._refresh_at = 0.0

    def limit(self) -> dt.datetime:
        if (clock := time.monotonic()) >= self._refresh_at:
            self._limit, self._refresh_at = _now() + MAX_OCCURRED_AHEAD, clock + 1.0
        return self._limit


_horizon = _Horizon()


def _not_far_ahead(value: dt.datetime) -> dt.datetime:
    """``occurred`` in UTC, at most ``MAX_OCCURRED_AHEAD`` after this process's clock (one
    validator with the conversion: one Python call per event on the ingest path)."""
    value = as_utc(value)
    if value > _horizon.limit():
        raise PydanticCustomError("occurred_ahead", f"is {value.isoformat()}, more than "
                                  f"{MAX_OCCURRED_AHEAD.total_seconds() / 60:g} minutes after the server's clock "
                                  f"({_now().isoformat(timespec='seconds')}); send the time in UTC or with its offset")
    return value


Occurred = Annotated[dt.datetime, AfterValidator(_not_far_ahead)]


class EventIn(InModel):
    """An event as a client sends it (``POST /api/events``, ``emit_event``)."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred: Occurred = Field(default_factory=_now)
    event: EventName
    resource: Resource
    related: list[RelatedResource] = Field(default_factory=new_list, max_length=MAX_RELATED)
    payload: dict[str, Any] = Field(default_factory=new_dict)
    follows: uuid.UUID | None = None

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return value  # checked once for the whole event below: the ingest path's hottest check

    @model_validator(mode="after")
    def _storable_and_bounded(self) -> "EventIn":
        """One JSON encoding per event answers both questions: can the database store it (no NUL,
        no unpaired surrogate, finite numbers) and is the payload within its bound. Only an event
        that fails the fast test is walked again, to name the problem (a string that merely reads
        "NaN" is walked, and passes). pydantic's encoder (in Rust: a tenth of ``json.dumps``'s time
        on these small documents, the ingest path's largest cost before) writes compact UTF-8, NUL
        as ``\\u0000``, non-finite numbers as ``NaN`` / ``Infinity``, and refuses an unpaired
        surrogate."""
        try:
            labels = to_json([self.event, self.resource, self.related])
            payload = to_json(self.payload, fallback=str)
            suspicious = b"\\u0000" in labels or b"\\u0000" in payload or b"NaN" in payload or b"Infinity" in payload
        except PydanticSerializationError:
            suspicious, payload = True, b""
        if suspicious:
            for name in ("event", "resource", "related", "payload"):
                why = storable.problem(getattr(self, name))
                if why is not None:
                    raise PydanticCustomError("unstorable", f"{name}: {why}")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PydanticCustomError("payload", f"payload is {len(payload)} bytes as JSON, "
                                                 f"the most is {MAX_PAYLOAD_BYTES}")
        return self

    @property
    def resource_id(self) -> str:
        return self.resource[RESOURCE_ID]


def resource(resource_id: str, name: str | None = None, **labels: str) -> dict[str, str]:
    """Labels of a resource: ``resource("orchestrator.flow-run.<id>", "my-run")``."""
    out = {RESOURCE_ID: resource_id, **labels}
    if name is not None:
        out[RESOURCE_NAME] = name
    return out


def related(role: str, resource_id: str, name: str | None = None, **labels: str) -> dict[str, str]:
    """Labels of a related resource: ``related("deployment", "orchestrator.deployment.<id>", "nightly")``."""
    return {**resource(resource_id, name, **labels), RESOURCE_ROLE: role}

