"""The trigger rules, one test each, on the pure evaluation (buckets in a dict)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from orchestrator.schemas.triggers import CompoundTrigger, EventTrigger, SequenceTrigger
from orchestrator.server.triggers import evaluation as ev

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def event(name: str, at: float, resource: str = "my.thing", related: list[dict[str, str]] | None = None,
          **labels: str) -> ev.Seen:
    return ev.Seen(id=uuid.uuid4(), occurred=T0 + dt.timedelta(seconds=at), event=name,
                   resource={"orchestrator.resource.id": resource, **labels}, related=related or [])


class Memory:
    """Buckets of one trigger in a dict: what ``buckets.py`` keeps in the database."""

    def __init__(self, trigger: EventTrigger) -> None:
        self.trigger, self.buckets = trigger, {}  # type: ignore[var-annotated]
        self.fired: list[ev.Fired] = []

    def send(self, *events: ev.Seen) -> int:
        before = len(self.fired)
        for e in events:
            if not ev.covers(self.trigger, e):
                continue
            key = ev.bucket_key(self.trigger, e)
            bucket, fired = ev.on_event(self.trigger, key, self.buckets.get(key), e)
            self._keep(key, bucket)
            self.fired += fired
        return len(self.fired) - before

    def clock(self, at: float) -> int:
        before = len(self.fired)
        as_of = T0 + dt.timedelta(seconds=at)
        opened = ev.always_open(self.trigger, as_of)
        if opened is not None and "[]" not in self.buckets:
            self.buckets["[]"] = opened
        for key, bucket in list(self.buckets.items()):
            after, fired = ev.on_clock(self.trigger, key, bucket, as_of)
            self._keep(key, after)
            self.fired += fired
        return len(self.fired) - before

    def _keep(self, key: str, bucket: ev.Bucket | None) -> None:
        if bucket is None:
            self.buckets.pop(key, None)
        else:
            self.buckets[key] = bucket


def trigger(**fields: Any) -> EventTrigger:
    return EventTrigger.model_validate(fields)


def test_reactive_without_window_fires_on_every_matching_event() -> None:
    mem = Memory(trigger(expect=["file.landed"]))
    assert mem.send(event("file.landed", 0), event("other", 1), event("file.landed", 2)) == 2


def test_reactive_threshold_within_a_window_fires_once_then_the_rest_of_the_window_is_dead() -> None:
    mem = Memory(trigger(expect=["tick"], threshold=3, within=60))
    assert mem.send(event("tick", 0), event("tick", 1)) == 0
    assert mem.send(event("tick", 2)) == 1  # the third within the window
    assert mem.send(event("tick", 3), event("tick", 4), event("tick", 5)) == 0  # same window: late
    assert mem.send(event("tick", 61), event("tick", 62), event("tick", 63)) == 1  # the next window


def test_threshold_not_reached_within_the_window_does_not_fire() -> None:
    mem = Memory(trigger(expect=["tick"], threshold=2, within=10))
    assert mem.send(event("tick", 0), event("tick", 30)) == 0


def test_proactive_fires_when_a_window_ends_short_and_not_when_enough_came() -> None:
    mem = Memory(trigger(expect=["done"], posture="Proactive", threshold=1, within=60))
    assert mem.clock(0) == 0  # opens [0, 60)
    assert mem.clock(59) == 0
    assert mem.clock(60) == 1  # nothing came: fires at the end
    mem.send(event("done", 70))  # the next window [60, 120) saw one
    assert mem.clock(120) == 0


def test_proactive_within_defaults_to_ten_seconds() -> None:
    assert trigger(posture="Proactive").within == dt.timedelta(seconds=10)


def test_after_opens_a_window_and_expected_events_before_it_are_ignored() -> None:
    mem = Memory(trigger(after=["run.started"], expect=["run.finished"], within=60))
    assert mem.send(event("run.finished", 0)) == 0  # no window open
    assert mem.send(event("run.started", 10), event("run.finished", 20)) == 1
    assert mem.send(event("run.finished", 30)) == 0  # the window closed with the firing


def test_proactive_after_fires_when_the_expected_event_does_not_follow_in_time() -> None:
    mem = Memory(trigger(after=["run.started"], expect=["run.finished"], posture="Proactive", within=3600,
                         for_each=["orchestrator.resource.id"]))
    mem.send(event("run.started", 0, resource="run.a"), event("run.started", 0, resource="run.b"))
    mem.send(event("run.finished", 100, resource="run.a"))
    assert mem.clock(3600) == 1
    assert mem.fired[0].labels == {"orchestrator.resource.id": "run.b"}


def test_the_same_event_in_after_and_expect_does_not_count_itself() -> None:
    reactive = Memory(trigger(after=["beat"], expect=["beat"], within=60))
    assert reactive.send(event("beat", 0)) == 0  # starts at -1, counts itself to 0
    assert reactive.send(event("beat", 10)) == 1
    heartbeat = Memory(trigger(after=["beat"], expect=["beat"], posture="Proactive", within=30))
    heartbeat.send(event("beat", 0), event("beat", 20))  # re-armed at 20: [20, 50)
    assert heartbeat.clock(40) == 0
    assert heartbeat.clock(50) == 1  # the heart stopped
    assert heartbeat.clock(200) == 0  # nothing more until a new beat


def test_for_each_keeps_separate_counts() -> None:
    mem = Memory(trigger(expect=["tick"], threshold=2, within=60, for_each=["orchestrator.resource.id"]))
    assert mem.send(event("tick", 0, resource="a"), event("tick", 1, resource="b")) == 0
    assert mem.send(event("tick", 2, resource="a")) == 1
    assert mem.fired[0].labels == {"orchestrator.resource.id": "a"}


def test_for_each_reads_a_related_label() -> None:
    t = trigger(expect=["tick"], for_each=["related:deployment:orchestrator.resource.name"])
    e = event("tick", 0, related=[{"orchestrator.resource.id": "orchestrator.deployment.x",
                                   "orchestrator.resource.role": "deployment", "orchestrator.resource.name": "nightly"}])
    assert ev.labels_of(t, ev.bucket_key(t, e)) == {"related:deployment:orchestrator.resource.name": "nightly"}


def test_match_and_match_related() -> None:
    t = trigger(expect=["orchestrator.flow-run.Completed"], match={"orchestrator.resource.id": "orchestrator.flow-run.*"},
                match_related={"orchestrator.resource.role": "deployment", "orchestrator.resource.name": "etl"})
    etl = [{"orchestrator.resource.id": "orchestrator.deployment.1", "orchestrator.resource.role": "deployment",
            "orchestrator.resource.name": "etl"}]
    other = [{**etl[0], "orchestrator.resource.name": "other"}]
    mem = Memory(t)
    assert mem.send(event("orchestrator.flow-run.Completed", 0, resource="orchestrator.flow-run.1", related=etl)) == 1
    assert mem.send(event("orchestrator.flow-run.Completed", 1, resource="orchestrator.flow-run.2", related=other)) == 0
    assert mem.send(event("orchestrator.flow-run.Completed", 2, resource="elsewhere.1", related=etl)) == 0


def test_a_late_event_from_before_the_window_is_ignored_and_a_slightly_early_one_counts() -> None:
    mem = Memory(trigger(expect=["tick"], threshold=2, within=60))
    mem.send(event("tick", 1000))
    assert mem.send(event("tick", 990)) == 1  # occurred a little before: the back-dated window counts it
    mem2 = Memory(trigger(expect=["tick"], threshold=2, within=60))
    mem2.send(event("tick", 1000))
    assert mem2.send(event("tick", 1000 - 16 * 60)) == 0  # before the window: late, ignored


def _children(n: int) -> list[dict[str, Any]]:
    return [{"expect": [f"e{i}"]} for i in range(n)]


def _fire(parent: CompoundTrigger | SequenceTrigger, order: list[int], spacing: float = 1) -> list[bool]:
    stored: list[ev.ChildFiring] = []
    out = []
    for step, index in enumerate(order):
        child = parent.triggers[index]
        stored, fires = ev.compose(parent, stored, ev.ChildFiring(child.id, uuid.uuid4(),
                                                                  T0 + dt.timedelta(seconds=step * spacing), None))
        out.append(fires)
    return out


def test_compound_any_all_and_n() -> None:
    any_ = CompoundTrigger.model_validate({"require": "any", "triggers": _children(3)})
    assert _fire(any_, [1]) == [True]
    all_ = CompoundTrigger.model_validate({"require": "all", "triggers": _children(3)})
    assert _fire(all_, [0, 0, 1, 2]) == [False, False, False, True]  # a repeat of one child is one
    two = CompoundTrigger.model_validate({"require": 2, "triggers": _children(3)})
    assert _fire(two, [2, 0, 1]) == [False, True, False]  # fired, then starts again


def test_compound_within_lets_old_firings_lapse() -> None:
    t = CompoundTrigger.model_validate({"require": "all", "triggers": _children(2), "within": 10})
    assert _fire(t, [0, 1], spacing=11) == [False, False]
    assert _fire(t, [0, 1], spacing=5) == [False, True]


def test_sequence_fires_only_in_order() -> None:
    t = SequenceTrigger.model_validate({"triggers": _children(3)})
    assert _fire(t, [1, 0, 2]) == [False, False, False]
    assert _fire(t, [0, 1, 2]) == [False, False, True]
