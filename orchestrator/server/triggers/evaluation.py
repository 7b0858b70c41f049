"""How an event trigger counts events and when it fires: pure functions over one bucket, the
state of one trigger for one ``for_each`` key (``buckets.py`` keeps buckets in the database).

Prefect's algorithm (its ``server/events/triggers.py``), step for step, so a Prefect user's
trigger fires here when it fired there:

* An event the trigger ``covers`` (its name in ``expect`` or ``after``, its resource fitting
  ``match``, each ``match_related`` spec met by some related resource) is counted in the bucket of
  its ``for_each`` key. Reactive evaluation takes the event's ``occurred`` as "now".
* Without ``after``, the first expected event opens a window back-dated ``LOOKBACK`` (so an event
  that occurred shortly before, and arrives late, still counts). With ``after``, an after-event
  opens ``[occurred, occurred + within)``, at -1 when the same event is also expected (it does not
  count itself: the "heartbeat stopped" pattern); expected events with no window open are ignored.
* An event that occurred before its bucket's window is late and ignored.
* Reactive fires when the count reaches ``threshold`` (``within`` 0: every event); the next window
  starts where the old one ended (or now), so the rest of a window that fired is dead.
* Proactive fires when a window (at least 10 s) ends with fewer than ``threshold`` events,
  checked by the clock (``on_clock``), not by an event.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from orchestrator import labels as label_rules
from orchestrator.schemas.events import RESOURCE_ROLE

if TYPE_CHECKING:
    from orchestrator.schemas.triggers import CompoundTrigger, EventTrigger, SequenceTrigger

# Functions over the trigger models' instances, which the evaluator gets from the automations it
# loads: the models' module (``schemas.triggers``: ~17 ms of a start's CPU to build its validators)
# is imported with the automations' service, by the first pass that finds an enabled automation.

LOOKBACK = dt.timedelta(minutes=15)  # the first window starts this long before its first event
EXPIRED_BUFFER = dt.timedelta(seconds=60)  # a bucket whose window ended this long ago is dropped


@dataclass(frozen=True)
class Seen:
    """An event as triggers read it."""

    id: uuid.UUID
    occurred: dt.datetime
    event: str
    resource: dict[str, str]
    related: list[dict[str, str]]
    payload: dict[str, Any] = field(default_factory=dict)
    follows: uuid.UUID | None = None
    received: dt.datetime | None = None

    def label(self, name: str) -> str | None:
        """A label of the resource, or ``related:<role>:<label>`` of the first related resource
        in that role (Prefect's ``find_resource_label``)."""
        kind, sep, rest = name.partition(":")
        if kind == "related" and sep:
            role, _, label = rest.partition(":")
            for labels in self.related:
                if labels.get(RESOURCE_ROLE) == role:
                    return labels.get(label)
            return None
        return self.resource.get(name)

    def as_json(self) -> dict[str, Any]:
        """The event as JSON values; made once per event (one event fires many automations, each
        firing quotes it), so the caller must not change it."""
        return self._json

    @cached_property
    def _json(self) -> dict[str, Any]:
        return {"id": str(self.id), "occurred": self.occurred.isoformat(), "event": self.event,
                "resource": self.resource, "related": self.related, "payload": self.payload,
                "follows": str(self.follows) if self.follows else None,
                "received": self.received.isoformat() if self.received else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Seen:
        return cls(id=uuid.UUID(data["id"]), occurred=dt.datetime.fromisoformat(data["occurred"]),
                   event=data["event"], resource=data["resource"], related=data["related"],
                   payload=data.get("payload") or {},
                   follows=uuid.UUID(data["follows"]) if data.get("follows") else None,
                   received=dt.datetime.fromisoformat(data["received"]) if data.get("received") else None)


@dataclass(frozen=True)
class Bucket:
    start: dt.datetime
    end: dt.datetime
    count: int
    last_event: Seen | None


@dataclass(frozen=True)
class Fired:
    """An event trigger fired: for which ``for_each`` labels, on which event (None: a proactive
    window that saw no event at all)."""

    trigger_id: uuid.UUID
    labels: dict[str, str]
    event: Seen | None


# --- which events a trigger looks at -----------------------------------------------------------


def names_event(trigger: EventTrigger, name: str) -> bool:
    """The event's name is one the trigger expects or opens a window on."""
    return trigger.expects(name) or starts_after(trigger, name)


def starts_after(trigger: EventTrigger, name: str) -> bool:
    return bool(trigger.after) and label_rules.any_matches(trigger.after, name)


def covers(trigger: EventTrigger, event: Seen) -> bool:
    return names_event(trigger, event.event) and matches_resources(trigger, event)


def matches_resources(trigger: EventTrigger, event: Seen) -> bool:
    """The event's resource fits ``match`` and each ``match_related`` spec is met by some related
    resource (``covers`` without the name, which the evaluator's index has checked)."""
    return ((not trigger.match or label_rules.labels_match(trigger.match, event.resource))
            and all(any(label_rules.labels_match(spec, labels) for labels in event.related)
                    for spec in trigger.related_specs()))


def bucket_key(trigger: EventTrigger, event: Seen) -> str:
    """The ``for_each`` values (sorted labels; a missing one is ""), as the bucket's key."""
    if not trigger.for_each:
        return "[]"  # the one bucket of a trigger without for_each (the common case: no encoding)
    return json.dumps([event.label(name) or "" for name in sorted(trigger.for_each)], separators=(",", ":"))


def labels_of(trigger: EventTrigger, key: str) -> dict[str, str]:
    if not trigger.for_each:
        return {}
    return dict(zip(sorted(trigger.for_each), json.loads(key), strict=True))


# --- evaluation ---------------------------------------------------------------------------------


def on_event(trigger: EventTrigger, key: str, bucket: Bucket | None, event: Seen, *, expected: bool | None = None,
             opens: bool | None = None) -> tuple[Bucket | None, list[Fired]]:
    """A covered event arrives: the bucket after it (None: no bucket) and what fired. ``expected``
    and ``opens`` (the trigger expects the event's name / opens a window on it) when the caller
    knows them: the evaluator's index works them out once per event name."""
    if expected is None:
        expected = trigger.expects(event.event)
    if opens is None:
        opens = starts_after(trigger, event.event)
    if opens:
        if bucket is None:
            bucket = Bucket(event.occurred, event.occurred + trigger.within, -1 if expected else 0, event)
    elif not trigger.after and expected and bucket is None:
        bucket = Bucket(event.occurred - LOOKBACK, event.occurred + trigger.within, 0, event)
    if not expected or bucket is None:
        return bucket, []  # an after-event only opens; an expected one with no window open is ignored
    return _evaluate(trigger, key, bucket, event.occurred, event)


def on_clock(trigger: EventTrigger, key: str, bucket: Bucket, as_of: dt.datetime) -> tuple[Bucket | None, list[Fired]]:
    """The clock reached ``as_of`` with no event: a Proactive window that ended short fires; any
    bucket long expired is dropped."""
    if trigger.posture == "Proactive":
        if bucket.count >= trigger.threshold:
            return None, []  # satisfied: it cannot fire any more
        return _evaluate(trigger, key, bucket, as_of, None)
    return (None if bucket.end <= as_of - EXPIRED_BUFFER else bucket), []


def always_open(trigger: EventTrigger, as_of: dt.datetime) -> Bucket | None:
    """A Proactive trigger without ``for_each`` or ``after`` always has a window open, so it fires
    even when no event ever comes."""
    if trigger.posture != "Proactive" or trigger.for_each or trigger.after:
        return None
    return Bucket(as_of, as_of + trigger.within, 0, None)


def _meets(trigger: EventTrigger, count: int) -> bool:
    return count >= trigger.threshold if trigger.posture == "Reactive" else count < trigger.threshold


def _evaluate(trigger: EventTrigger, key: str, bucket: Bucket, now: dt.datetime,
              event: Seen | None) -> tuple[Bucket | None, list[Fired]]:
    fired: list[Fired] = []
    immediate = trigger.posture == "Reactive" and not trigger.within
    while True:
        if now < bucket.start:
            return bucket, fired  # late: its window already ended or fired
        unspent = 1 if event is not None else 0
        if event is not None and (immediate or bucket.start <= now < bucket.end):
            bucket = Bucket(bucket.start, bucket.end, bucket.count + 1, event)  # not ``replace``: hot
            unspent = 0
        ready = trigger.posture == "Reactive" or bucket.end <= now
        if ready and _meets(trigger, bucket.count):
            fired.append(Fired(trigger.id, labels_of(trigger, key), event or bucket.last_event))
        elif now < bucket.end:
            if (event is not None and trigger.posture == "Proactive" and not _meets(trigger, bucket.count)
                    and starts_after(trigger, event.event) and trigger.expects(event.event)):
                # The heartbeat came: re-arm the window from this one.
                return Bucket(event.occurred, event.occurred + trigger.within, 0, event), fired
            return bucket, fired
        elif immediate:
            return bucket, fired  # threshold > 1 with no window: the count builds in this bucket
        # The window is over (or fired): the next one.
        if trigger.after:
            return None, fired  # the next after-event opens it
        if not trigger.within:
            return None, fired
        start = max(bucket.end, now)
        if trigger.posture == "Reactive" and unspent:
            bucket = Bucket(start, start + trigger.within, 0, event)
            continue  # the event fell after the old window: it counts in the new one
        return Bucket(start, start + trigger.within, unspent, event or bucket.last_event), fired


def next_check(trigger: EventTrigger, buckets: list[Bucket], as_of: dt.datetime) -> dt.datetime:
    """When the clock must look at a Proactive trigger again."""
    ends = [b.end for b in buckets if b.end > as_of]
    return min([as_of + trigger.within, *ends])


# --- compound and sequence ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChildFiring:
    child_id: uuid.UUID
    firing_id: uuid.UUID
    fired_at: dt.datetime
    event: Seen | None


def needed(parent: CompoundTrigger | SequenceTrigger) -> int:
    return parent.needed if parent.type == "compound" else len(parent.triggers)


def compose(parent: CompoundTrigger | SequenceTrigger, stored: list[ChildFiring],
            new: ChildFiring) -> tuple[list[ChildFiring], bool]:
    """A child of ``parent`` fired: the child firings kept after it, and whether ``parent`` fires
    (each child's newest firing replaces its older one; firings older than ``within`` lapse)."""
    if needed(parent) == 1 and parent.type == "compound" or len(parent.triggers) == 1:
        return stored, True
    kept = [f for f in stored if f.child_id != new.child_id]
    if parent.within is not None:
        kept = [f for f in kept if f.fired_at >= new.fired_at - parent.within]
    kept.append(new)
    if parent.type == "compound":
        ready = len({f.child_id for f in kept}) >= parent.needed
    else:
        order = [f.child_id for f in sorted(kept, key=lambda f: f.fired_at)]
        ready = order == [child.id for child in parent.triggers]
    return ([], True) if ready else (kept, False)
