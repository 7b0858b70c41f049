"""One evaluator's passes over the database: the events a firing stores (written as JSON text
from parts encoded once, ``triggers/firing.py``) read back as events, and events after a run of
seqs used up (more than a pass's range) are still evaluated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from orchestrator.schemas.automations import AutomationCreate
from orchestrator.schemas.events import EventIn
from orchestrator.server.db import models as m
from orchestrator.server.db.session import make_engine, make_sessionmaker
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import automations, events
from orchestrator.server.triggers.evaluator import SCAN, SWEEP_SECONDS, Evaluator


def _automation(sessions: Any, trigger: dict[str, Any]) -> uuid.UUID:
    with sessions.begin() as session:
        return automations.create(session, AutomationCreate.model_validate({
            "name": "watch", "trigger": trigger, "actions": [{"type": "do-nothing"}, {"type": "do-nothing"}]})).id


def _emit(sessions: Any, *sent: EventIn) -> None:
    with sessions.begin() as session:
        events.record(session, list(sent))


def _drain(evaluator: Evaluator) -> int:
    firings = 0
    while True:
        work, _ = evaluator.run_pass()
        firings += work.firings if work else 0
        if work is None or evaluator.last_batch == 0:
            return firings


def _named(sessions: Any, name: str) -> list[m.Event]:
    with sessions() as session:
        return list(session.scalars(select(m.Event).where(m.Event.event == name).order_by(m.Event.seq)))


def test_a_firing_stores_its_events_as_events(sessions: Any) -> None:
    automation_id = _automation(sessions, {"expect": ["file.landed"], "for_each": ["orchestrator.resource.id"]})
    evaluator = Evaluator(sessions)
    evaluator.run_pass()  # the cursor starts here
    sent = EventIn(event="file.landed", resource={"orchestrator.resource.id": "s3.a", "quote": 'say "hi"\n'},
                   related=[{"orchestrator.resource.id": "x.y", "orchestrator.resource.role": "thing"}],
                   payload={"size": 3, "nested": {"é": [1, None]}})
    _emit(sessions, sent)
    assert _drain(evaluator) == 1

    [triggered] = _named(sessions, "orchestrator.automation.triggered")
    own = f"orchestrator.automation.{automation_id}"
    assert triggered.resource_id == own and triggered.resource["orchestrator.resource.name"] == "watch"
    assert triggered.related == [{"orchestrator.resource.id": f"orchestrator.event.{sent.id}",
                                  "orchestrator.resource.role": "triggering-event"}]
    assert triggered.payload["triggering_labels"] == {"orchestrator.resource.id": "s3.a"}
    quoted = triggered.payload["triggering_event"]
    assert quoted["id"] == str(sent.id) and quoted["resource"] == sent.resource and quoted["payload"] == sent.payload
    assert quoted["related"] == sent.related

    executed = _named(sessions, "orchestrator.automation.action.executed")
    assert [e.payload for e in executed] == [
        {"action_index": index, "action_type": "do-nothing", "firing": str(triggered.id)} for index in (0, 1)]
    for event in executed:
        assert event.follows == triggered.id and event.resource == triggered.resource
        assert event.related == [
            {"orchestrator.resource.id": f"orchestrator.event.{triggered.id}",
             "orchestrator.resource.role": "automation-triggered-event"},
            {"orchestrator.resource.id": f"orchestrator.event.{sent.id}", "orchestrator.resource.role": "triggering-event"}]
        assert event.occurred >= triggered.occurred
    with sessions() as session:  # the related resources are indexed, as for any event
        roles = session.execute(select(m.EventResource.role).where(
            m.EventResource.resource_id == f"orchestrator.event.{triggered.id}")).scalars().all()
    assert sorted(roles) == ["automation-triggered-event", "automation-triggered-event"]


@pytest.fixture
def postgres_sessions(postgres_url: str) -> Iterator[Any]:
    engine = make_engine(postgres_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_events_after_a_run_of_used_up_seqs_are_evaluated(postgres_sessions: Any) -> None:
    """More seqs used up than a pass reads at once (``_new_events`` reads a bounded range)."""
    sessions = postgres_sessions
    _automation(sessions, {"expect": ["tick"]})
    evaluator = Evaluator(sessions)
    evaluator.run_pass()
    _emit(sessions, EventIn(event="tick", resource={"orchestrator.resource.id": "a"}))
    with sessions.begin() as session:  # as many rolled-back inserts would: seqs taken, never stored
        session.execute(text("SELECT setval('events_seq_seq', nextval('events_seq_seq') + :n)"), {"n": 3 * SCAN})
    _emit(sessions, EventIn(event="tick", resource={"orchestrator.resource.id": "b"}))
    assert _drain(evaluator) == 2


def test_a_pass_asks_for_no_sweep_when_no_reactive_trigger_is_loaded(sessions: Any) -> None:
    """Expired buckets are only Reactive triggers': with none loaded a pass owes the clock nothing,
    so an idle server's evaluator sleeps until an event or its long re-read (it woke every 10 s
    for a sweep of nothing); with one, the sweep is due again ``SWEEP_SECONDS`` later."""
    evaluator = Evaluator(sessions)
    work, next_at = evaluator.run_pass()
    assert work is not None and (next_at - utcnow()).total_seconds() > SWEEP_SECONDS
    _automation(sessions, {"expect": ["tick"]})  # Reactive, the default posture
    evaluator.reload()
    _, next_at = evaluator.run_pass()
    assert (next_at - utcnow()).total_seconds() <= SWEEP_SECONDS
