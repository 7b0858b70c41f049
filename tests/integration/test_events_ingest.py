"""``POST /api/events``' group commit (``server/api/ingest.py``) and ``events.record_batches``:
batches of concurrent requests share a transaction, each answered with its own count once that
transaction committed; a batch the database refuses fails alone. Real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DataError

from orchestrator.errors import ServiceUnavailable
from orchestrator.schemas.events import EventIn, related
from orchestrator.server.api.ingest import EventWriter
from orchestrator.server.db import models as m
from orchestrator.server.services import events
from tests.harness import wait_until


def _event(**fields: Any) -> EventIn:
    return EventIn(event="my.thing.happened", resource={"orchestrator.resource.id": "my.thing.1"},
                   related=[related("tag", "orchestrator.tag.t")], **fields)


def _stored(sessions: Any) -> set[uuid.UUID]:
    with sessions() as session:
        return set(session.scalars(select(m.Event.id)))


def test_batches_recorded_together_count_each_batch(sessions: Any) -> None:
    a, b, c, old = _event(), _event(), _event(), _event()
    with sessions.begin() as session:
        events.record(session, [old])
    with sessions.begin() as session:
        # b twice in the first batch, a in two batches (the first counts it), old already stored
        counts = events.record_batches(session, [[a, b, b], [a, c], [old], [b]])
    assert counts == [2, 1, 0, 0]
    assert _stored(sessions) == {a.id, b.id, c.id, old.id}
    with sessions() as session:  # each stored event's related resource indexed once
        assert len(session.scalars(select(m.EventResource.id)).all()) == 4


def test_batches_with_nothing_new(sessions: Any) -> None:
    a = _event()
    with sessions.begin() as session:
        events.record(session, [a])
    with sessions.begin() as session:
        assert events.record_batches(session, [[a], [a]]) == [0, 0]


def _holding(sessions: Any, event: EventIn) -> Any:
    """A transaction of the test's own that stored ``event`` and has not committed: a writer's
    insert of the same id waits on it (the unique index), so what is written next queues behind."""
    holder = sessions()
    holder.begin()
    events.record(holder, [event])
    return holder


def _writer_waits_on_a_lock(sessions: Any) -> bool:
    with sessions() as session:
        return bool(session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_batches_share_a_commit_and_are_answered_after_it(sessions: Any) -> None:
    writer = EventWriter(sessions, writers=1)
    x, y, z, w, v = _event(), _event(), _event(), _event(), _event()
    holder = _holding(sessions, x)

    async def scenario() -> list[int]:
        first = asyncio.ensure_future(writer.write([x, y]))
        await asyncio.to_thread(wait_until, "the writer waiting on the uncommitted event",
                                lambda: _writer_waits_on_a_lock(sessions), 30)
        later = [asyncio.ensure_future(writer.write(batch)) for batch in ([z], [w, v], [y])]
        await asyncio.sleep(0)  # a turn of the loop: the three requests hand their batches over
        assert not first.done() and not any(f.done() for f in later)  # nothing answered before its commit
        assert _stored(sessions) == set()
        holder.commit()  # x is now stored by someone else: the writer's insert goes on, x dropped
        answers = await asyncio.gather(first, *later)
        assert y.id in _stored(sessions)  # committed when answered
        return answers

    try:
        assert asyncio.run(scenario()) == [1, 1, 2, 0]  # y counts for the first batch that had it
        assert writer.groups == 2  # [x, y] alone; the three queued behind it in one transaction
        assert _stored(sessions) == {x.id, y.id, z.id, w.id, v.id}
    finally:
        holder.close()
        writer.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_batch_the_database_refuses_fails_alone(sessions: Any) -> None:
    writer = EventWriter(sessions, writers=1)
    x, good, later = _event(), _event(), _event()
    # Past validation (built without it), but PostgreSQL refuses NUL in JSONB: the safety net's case.
    bad = EventIn.model_construct(id=uuid.uuid4(), occurred=dt.datetime.now(dt.UTC), event="my.bad",
                                  resource={"orchestrator.resource.id": "my.bad"}, related=[],
                                  payload={"text": "a\x00b"}, follows=None)
    holder = _holding(sessions, x)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(writer.write([x]))
        await asyncio.to_thread(wait_until, "the writer waiting on the uncommitted event",
                                lambda: _writer_waits_on_a_lock(sessions), 30)
        queued = [asyncio.ensure_future(writer.write(batch)) for batch in ([good], [bad, _event()], [later])]
        await asyncio.sleep(0)
        holder.commit()
        return await asyncio.gather(first, *queued, return_exceptions=True)

    try:
        answers = asyncio.run(scenario())
        assert answers[0] == 0 and answers[1] == 1 and answers[3] == 1
        assert isinstance(answers[2], DataError)
        assert _stored(sessions) == {x.id, good.id, later.id}  # the bad batch left nothing, not even its good event
    finally:
        holder.close()
        writer.close()


def test_a_closed_writer_has_written_what_it_was_given_and_refuses_more(sessions: Any) -> None:
    writer = EventWriter(sessions)
    a = _event()

    async def write(batch: list[EventIn]) -> int:
        return await writer.write(batch)

    assert asyncio.run(write([a])) == 1
    assert asyncio.run(write([])) == 0
    writer.close()
    with pytest.raises(ServiceUnavailable):
        asyncio.run(write([_event()]))
    assert _stored(sessions) == {a.id}
