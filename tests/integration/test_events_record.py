"""``services/events.record``, the one writer of events, on SQLite and PostgreSQL: duplicates by id
are dropped, related resources are indexed, Prefect's names are read as ours, bounds are named."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from orchestrator.schemas.events import MAX_RELATED, EventIn, related
from orchestrator.server.db import models as m
from orchestrator.server.services import events


def _event(**fields: Any) -> EventIn:
    return EventIn(event="my.thing.happened", resource={"orchestrator.resource.id": "my.thing.1"}, **fields)


def test_an_id_is_stored_once_across_and_within_batches(sessions: Any) -> None:
    first, other = _event(), _event()
    with sessions.begin() as session:
        assert events.record(session, [first, first, other]) == 2
    with sessions.begin() as session:
        assert events.record(session, [first]) == 0
        assert session.scalars(select(m.Event.id).order_by(m.Event.seq)).all() == [first.id, other.id]


def test_related_resources_are_indexed_with_their_role(sessions: Any) -> None:
    deployment = f"orchestrator.deployment.{uuid.uuid4()}"
    event = _event(related=[related("deployment", deployment, "nightly"), related("tag", "orchestrator.tag.etl")])
    with sessions.begin() as session:
        events.record(session, [event])
    with sessions.begin() as session:
        rows = session.execute(select(m.EventResource.resource_id, m.EventResource.role)
                               .order_by(m.EventResource.id)).all()
        assert [tuple(row) for row in rows] == [(deployment, "deployment"), ("orchestrator.tag.etl", "tag")]


def test_a_rolled_back_transaction_leaves_no_event(sessions: Any) -> None:
    with pytest.raises(RuntimeError), sessions.begin() as session:
        events.record(session, [_event()])
        raise RuntimeError("the change failed")
    with sessions.begin() as session:
        assert session.scalars(select(m.Event)).all() == []


def test_prefect_names_mean_ours() -> None:
    event = EventIn(event="prefect.flow-run.Completed", resource={"prefect.resource.id": "prefect.flow-run.1"},
                    related=[{"prefect.resource.id": "prefect.deployment.2", "prefect.resource.role": "deployment"}])
    assert event.event == "orchestrator.flow-run.Completed"
    assert event.resource == {"orchestrator.resource.id": "orchestrator.flow-run.1"}
    assert event.related == [{"orchestrator.resource.id": "orchestrator.deployment.2",
                              "orchestrator.resource.role": "deployment"}]


@pytest.mark.parametrize(("fields", "named"), [
    ({"resource": {"name": "x"}}, "orchestrator.resource.id"),
    ({"related": [{"orchestrator.resource.id": "a"}]}, "orchestrator.resource.role"),
    ({"related": [related("tag", f"t.{i}") for i in range(MAX_RELATED + 1)]}, "related"),
    ({"payload": {"blob": "x" * 1_000_001}}, "payload is"),
    ({"payload": {"text": "a\x00b"}}, "NUL"),
    ({"event": ""}, "event"),
    ({"occurred": "3000-01-01T00:00:00Z"}, "occurred\n  is 3000-01-01T00:00:00+00:00, more than 60 minutes after"),
])
def test_bad_events_are_refused_naming_the_problem(fields: dict[str, Any], named: str) -> None:
    base = {"event": "my.thing", "resource": {"orchestrator.resource.id": "my.thing.1"}}
    with pytest.raises(ValidationError) as error:
        EventIn(**{**base, **fields})
    assert named in str(error.value)
