"""Reading events: the event as the server keeps it (``Event``), the filter of pages (``GET
/api/events``, ``POST /api/events/filter``) and of the stream, and a page.

Apart from ``schemas/events.py`` (what an event is, as a client sends it) because only the reading
side needs these: a server imports ``EventIn`` at its start (every run's path records events), and
these models -- eight, each a validator and a serializer built when its class is made -- only when
a request reads events (the events routes are a lazy family, ``api/lazy.py``).
"""

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from orchestrator.schemas.base import DEFERRED, InModel, Instant, OutModel, new_dict, new_list
from orchestrator.schemas.events import MAX_LABEL_LENGTH, RESOURCE_ID, RESOURCE_ROLE, prefect_names


class Event(OutModel):
    """An event as the server keeps it: what was sent, and when the server ``received`` it."""

    model_config = DEFERRED  # a page or the stream reads them

    id: uuid.UUID
    occurred: dt.datetime
    event: str
    resource: dict[str, str]
    related: list[dict[str, str]]
    payload: dict[str, Any]
    follows: uuid.UUID | None = None
    received: dt.datetime


MAX_FILTER_ITEMS = 100  # patterns in one list of a filter
MAX_PAGE = 1000  # events in one page
DEFAULT_PAGE = 50

Pattern = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_LENGTH + 1)]  # + 1: a leading "!"
Patterns = Annotated[list[Pattern], Field(max_length=MAX_FILTER_ITEMS)]


def _prefect_pattern(pattern: str) -> str:
    """``prefect.x`` means ``orchestrator.x`` in a pattern too, negated or not."""
    return "!" + prefect_names(pattern[1:]) if pattern.startswith("!") else prefect_names(pattern)


def _prefect_patterns(patterns: list[str]) -> list[str]:
    return [_prefect_pattern(pattern) for pattern in patterns]


def _prefect_spec(spec: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
    if len(spec) > MAX_FILTER_ITEMS:
        raise PydanticCustomError("labels", f"has {len(spec)} labels, the most is {MAX_FILTER_ITEMS}")
    out: dict[str, str | list[str]] = {}
    for key, patterns in spec.items():
        key = prefect_names(key)
        # Only ids (and roles, which are plain words) are names: other label values stay as written.
        rename = _prefect_pattern if key == RESOURCE_ID else (lambda text: text)
        out[key] = rename(patterns) if isinstance(patterns, str) else [rename(p) for p in patterns]
    return out


NamePatterns = Annotated[Patterns, AfterValidator(_prefect_patterns)]
LabelSpec = Annotated[dict[Annotated[str, Field(min_length=1, max_length=MAX_LABEL_LENGTH)], Pattern | Patterns],
                      AfterValidator(_prefect_spec)]


class OccurredFilter(InModel):
    """When the event happened: ``since <= occurred <= until`` (either may be left out)."""

    since: Instant | None = None
    until: Instant | None = None


class EventNameFilter(InModel):
    """The event's name: any of ``name`` (globs) or ``prefix``, and none of the exclusions."""

    name: NamePatterns = Field(default_factory=new_list)
    prefix: NamePatterns = Field(default_factory=new_list)
    exclude_name: NamePatterns = Field(default_factory=new_list)
    exclude_prefix: NamePatterns = Field(default_factory=new_list)


class ResourceFilter(InModel):
    """A resource: its id is any of ``id`` (globs) or starts with any of ``id_prefix``; and its
    labels match ``labels`` (``orchestrator.labels``)."""

    id: NamePatterns = Field(default_factory=new_list)
    id_prefix: NamePatterns = Field(default_factory=new_list)
    labels: LabelSpec = Field(default_factory=new_dict)


class RelatedFilter(ResourceFilter):
    """One related resource that satisfies every part at once (id, role and labels)."""

    role: Patterns = Field(default_factory=new_list)


class EventFilter(InModel):
    """Which events: every given part must hold (AND). ``resource`` looks at the primary resource,
    ``related`` at one related resource, ``any_resource`` at either. ``order`` sorts pages by
    (occurred, storage order); the stream is always in storage order."""

    occurred: OccurredFilter = Field(default_factory=OccurredFilter)
    event: EventNameFilter = Field(default_factory=EventNameFilter)
    resource: ResourceFilter = Field(default_factory=ResourceFilter)
    related: RelatedFilter | None = None
    any_resource: ResourceFilter | None = None
    order: Literal["ASC", "DESC"] = "DESC"

    def matches(self, event: Event) -> bool:
        """The whole filter, in Python: the stream's test, and the pages' for what SQL leaves out."""
        from orchestrator.labels import any_matches, glob_matches

        when, name = self.occurred, self.event
        if (when.since and event.occurred < when.since) or (when.until and event.occurred > when.until):
            return False
        if (name.name or name.prefix) and not (any(glob_matches(p, event.event) for p in name.name)
                                               or any(event.event.startswith(p) for p in name.prefix)):
            return False
        if any(glob_matches(p, event.event) for p in name.exclude_name) or any(
                event.event.startswith(p) for p in name.exclude_prefix):
            return False
        if not _resource_matches(self.resource, event.resource):
            return False
        if self.related is not None and not any(
                _resource_matches(self.related, labels)
                and (not self.related.role or any_matches(self.related.role, labels.get(RESOURCE_ROLE)))
                for labels in event.related):
            return False
        return self.any_resource is None or any(
            _resource_matches(self.any_resource, labels) for labels in [event.resource, *event.related])

    @property
    def python_only(self) -> bool:
        """Whether a part is checked only in Python (labels of related resources): a page then
        scans a bounded number of rows and may come back short (``services/event_pages.read_page``)."""
        return bool((self.related and self.related.labels) or (self.any_resource and self.any_resource.labels))


def _resource_matches(spec: ResourceFilter, labels: dict[str, str]) -> bool:
    from orchestrator.labels import any_matches, labels_match

    resource_id = labels.get(RESOURCE_ID, "")
    if (spec.id or spec.id_prefix) and not (any_matches(spec.id, resource_id)
                                            or any(resource_id.startswith(p) for p in spec.id_prefix)):
        return False
    return labels_match(spec.labels, labels)


class EventQuery(InModel):
    """``POST /api/events/filter``: a filter, a page size, and the ``next_page`` token of the page
    before (then the filter must be the same)."""

    filter: EventFilter = Field(default_factory=EventFilter)
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    page: str | None = Field(None, max_length=200)


class EventPage(OutModel):
    """A page of events; ``next_page`` reads on (None: there is no more)."""

    model_config = DEFERRED  # a page or the stream reads them

    events: list[Event]
    next_page: str | None = None
