"""Triggers: when an automation fires, in Prefect's shape so a Prefect user's YAML or JSON works as
written.

* ``EventTrigger`` counts events named in ``expect`` (any event when empty) whose resource fits
  ``match`` and whose related resources fit ``match_related``, in buckets per ``for_each`` label
  value. ``Reactive`` fires when ``threshold`` events arrive ``within`` a window (``within`` 0: on
  every event); ``Proactive`` fires when fewer than ``threshold`` arrived by the end of a window
  (at least 10 s). ``after`` names events that open a window.
* ``CompoundTrigger`` fires when ``require`` (any, all or a number) of its triggers fired ``within``.
* ``SequenceTrigger`` fires when its triggers fired in order ``within``.

``type`` may be left out, as in Prefect: ``posture`` given means event, ``triggers`` with
``require`` compound, ``triggers`` without it sequence, anything else event. ``prefect.`` names
(event globs, label keys, resource ids) are read as ``orchestrator.`` ones. Durations are seconds
(a number) or ISO 8601 (``PT1H``), written back as seconds. Each trigger has an ``id`` the server
gives it; a changed trigger gets new ids, so state kept for an old definition never counts for a
new one. A misspelt key is refused (Prefect ignores it, which for ``expects:`` means "any event").
"""

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator import labels
from orchestrator.schemas.base import INT32_MAX, InModel, new_dict, new_list
from orchestrator.schemas.events import MAX_EVENT_NAME, MAX_LABEL_LENGTH, RESOURCE_ID, prefect_names

PROACTIVE_MIN_WITHIN = dt.timedelta(seconds=10)
MAX_WITHIN = dt.timedelta(days=366)
MAX_GLOBS = 100  # entries of expect / after
MAX_SPEC_LABELS = 100  # labels of one resource specification
MAX_PATTERNS = 100  # patterns of one label
MAX_RELATED_SPECS = 20
MAX_FOR_EACH = 10
MAX_CHILDREN = 50  # triggers of one compound or sequence trigger
MAX_DEPTH = 3  # composite triggers nested in composite triggers


def _seconds(value: dt.timedelta) -> float | int:
    seconds = value.total_seconds()
    return int(seconds) if seconds.is_integer() else seconds


Duration = Annotated[dt.timedelta, PlainSerializer(_seconds, when_used="json")]


def _negatable(translate: Any) -> Any:
    def read(text: str) -> str:
        return "!" + translate(text[1:]) if text.startswith("!") else translate(text)
    return read


def _event_glob(text: str) -> str:
    if not text or len(text) > MAX_EVENT_NAME:
        raise PydanticCustomError("event_glob", f"an event name glob is 1-{MAX_EVENT_NAME} characters")
    return _negatable(prefect_names)(text)


def _for_each_label(text: str) -> str:
    if not text or len(text) > MAX_LABEL_LENGTH:
        raise PydanticCustomError("label", f"a label name is 1-{MAX_LABEL_LENGTH} characters")
    kind, sep, rest = text.partition(":")
    if kind == "related" and sep:  # related:<role>:<label>
        role, sep2, label = rest.partition(":")
        if not sep2 or not role or not label:
            raise PydanticCustomError("label", f"{text!r}: a related label is written 'related:<role>:<label>'")
        return f"related:{role}:{prefect_names(label)}"
    return prefect_names(text)


def _spec(value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
    """A resource specification: label -> glob or list of globs (``!`` negates)."""
    if len(value) > MAX_SPEC_LABELS:
        raise PydanticCustomError("spec", f"has {len(value)} labels, the most is {MAX_SPEC_LABELS}")
    out: dict[str, str | list[str]] = {}
    for key, patterns in value.items():
        if not key or len(key) > MAX_LABEL_LENGTH:
            raise PydanticCustomError("spec", f"a label name is 1-{MAX_LABEL_LENGTH} characters")
        key = prefect_names(key)
        read = _negatable(prefect_names) if key == RESOURCE_ID else (lambda text: text)
        if isinstance(patterns, list):
            if len(patterns) > MAX_PATTERNS:
                raise PydanticCustomError("spec", f"label {key!r} has {len(patterns)} patterns, the most is "
                                                  f"{MAX_PATTERNS}")
            out[key] = [read(p) for p in patterns]
        else:
            out[key] = read(patterns)
    return out


ResourceSpec = Annotated[dict[str, str | list[str]], AfterValidator(_spec)]
EventGlob = Annotated[str, AfterValidator(_event_glob)]
ForEachLabel = Annotated[str, AfterValidator(_for_each_label)]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))  # Prefect's sets, in the order given


def label_matches(value: str | None, patterns: str | list[str]) -> bool:
    """Prefect's label rule (``orchestrator/labels.py``, the one matcher of filters and triggers)."""
    return labels.any_matches(patterns, value)


def spec_matches(spec: dict[str, str | list[str]], resource: dict[str, str]) -> bool:
    """Every label of ``spec`` matches ``resource`` (an empty spec matches anything)."""
    return labels.labels_match(spec, resource)


class EventTrigger(InModel):
    type: Literal["event"] = "event"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Given by the server.")
    match: ResourceSpec = Field(default_factory=new_dict, description="Labels the event's resource must have.")
    match_related: ResourceSpec | list[ResourceSpec] = Field(
        default_factory=new_dict, description="Labels some related resource must have (a list: each spec by some).")
    after: list[EventGlob] = Field(default_factory=new_list, max_length=MAX_GLOBS,
                                   description="Events that open a window (none: the first expected event does).")
    expect: list[EventGlob] = Field(default_factory=new_list, max_length=MAX_GLOBS,
                                    description="Events counted (none: any event).")
    for_each: list[ForEachLabel] = Field(default_factory=new_list, max_length=MAX_FOR_EACH,
                                         description="Labels whose values keep separate counts.")
    posture: Literal["Reactive", "Proactive"] = "Reactive"
    threshold: int = Field(1, ge=1, le=INT32_MAX)
    within: Duration = Field(dt.timedelta(0), validate_default=True,
                             description="Window, in seconds (Proactive: at least 10; 0 or none means 10).")

    @field_validator("match_related")
    @classmethod
    def _bounded_related(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_RELATED_SPECS:
            raise PydanticCustomError("spec", f"has {len(value)} specs, the most is {MAX_RELATED_SPECS}")
        return value

    @field_validator("after", "expect", "for_each")
    @classmethod
    def _as_set(cls, value: list[str]) -> list[str]:
        return _unique(value)

    @field_validator("posture", mode="before")
    @classmethod
    def _no_metric(cls, value: Any) -> Any:
        if value == "Metric":
            raise PydanticCustomError("posture", "Metric triggers are a Prefect Cloud feature, not supported: "
                                                 "use Reactive or Proactive")
        return value

    @field_validator("within")
    @classmethod
    def _window(cls, value: dt.timedelta, info: Any) -> dt.timedelta:
        if value < dt.timedelta(0) or value > MAX_WITHIN:
            raise PydanticCustomError("within", f"within must be 0 to {int(MAX_WITHIN.total_seconds())} seconds")
        if info.data.get("posture") == "Proactive":
            if value == dt.timedelta(0):
                return PROACTIVE_MIN_WITHIN  # Prefect's reading of a missing or zero window
            if value < PROACTIVE_MIN_WITHIN:
                raise PydanticCustomError("within", "a Proactive trigger's within must be at least 10 seconds "
                                                    f"(got {_seconds(value)})")
        return value

    def related_specs(self) -> list[dict[str, str | list[str]]]:
        """``match_related`` as a list of specs, each to be met by some related resource."""
        specs = self.match_related if isinstance(self.match_related, list) else [self.match_related]
        return [spec for spec in specs if spec]

    def expects(self, event_name: str) -> bool:
        return not self.expect or label_matches(event_name, self.expect)


def _require_problem(require: int | str, children: int) -> str | None:
    if isinstance(require, int) and not 1 <= require <= children:
        return f"require must be between 1 and the number of triggers ({children}), got {require}"
    return None


class CompoundTrigger(InModel):
    type: Literal["compound"] = "compound"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Given by the server.")
    triggers: list["Trigger"] = Field(min_length=1, max_length=MAX_CHILDREN)
    require: int | Literal["any", "all"]
    within: Duration | None = Field(None, ge=dt.timedelta(0), le=MAX_WITHIN)

    @model_validator(mode="after")
    def _require_fits(self) -> "CompoundTrigger":
        why = _require_problem(self.require, len(self.triggers))
        if why is not None:
            raise PydanticCustomError("require", why)
        return self

    @property
    def needed(self) -> int:
        """How many of its triggers must fire."""
        if self.require == "any":
            return 1
        return len(self.triggers) if self.require == "all" else int(self.require)


class SequenceTrigger(InModel):
    type: Literal["sequence"] = "sequence"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Given by the server.")
    triggers: list["Trigger"] = Field(min_length=1, max_length=MAX_CHILDREN)
    within: Duration | None = Field(None, ge=dt.timedelta(0), le=MAX_WITHIN)


def trigger_kind(value: Any) -> str | None:
    """Prefect's inference of a trigger's ``type`` when it is left out."""
    if not isinstance(value, dict):
        return getattr(value, "type", None)
    if value.get("type") is not None:
        return str(value["type"])
    if "posture" in value:
        return "event"
    if "triggers" in value:
        return "compound" if "require" in value else "sequence"
    return "event"


KIND_ERROR = {"custom_error_type": "trigger_type",
              "custom_error_message": "a trigger's type is 'event', 'compound' or 'sequence'"}
Trigger = Annotated[
    Annotated[EventTrigger, Tag("event")] | Annotated[CompoundTrigger, Tag("compound")]
    | Annotated[SequenceTrigger, Tag("sequence")],
    Discriminator(trigger_kind, **KIND_ERROR),  # type: ignore[arg-type]
]
CompoundTrigger.model_rebuild()
SequenceTrigger.model_rebuild()


def leaves(trigger: EventTrigger | CompoundTrigger | SequenceTrigger) -> Iterator[EventTrigger]:
    """Every event trigger inside ``trigger``."""
    if isinstance(trigger, EventTrigger):
        yield trigger
    else:
        for child in trigger.triggers:
            yield from leaves(child)


def depth(trigger: EventTrigger | CompoundTrigger | SequenceTrigger) -> int:
    if isinstance(trigger, EventTrigger):
        return 0
    return 1 + max(depth(child) for child in trigger.triggers)


def lone_firers(trigger: EventTrigger | CompoundTrigger | SequenceTrigger) -> Iterator[EventTrigger]:
    """The event triggers whose firing alone fires ``trigger`` (a compound that needs one of its
    triggers; a sequence or compound of one)."""
    if isinstance(trigger, EventTrigger):
        yield trigger
    elif isinstance(trigger, CompoundTrigger) and trigger.needed == 1 or len(trigger.triggers) == 1:
        for child in trigger.triggers:
            yield from lone_firers(child)


def without_ids(data: Any) -> Any:
    """A trigger's JSON without the server's ids: what to compare to tell whether it changed."""
    if isinstance(data, dict):
        return {key: without_ids(value) for key, value in data.items() if key != "id"}
    if isinstance(data, list):
        return [without_ids(item) for item in data]
    return data
