"""Events: recording them (in the caller's transaction), and what the hub hears once they commit.

``record`` is the one writer of the ``events`` table: the API's ``POST /api/events``, every service
that emits an event of its own (a flow run's state change, in the same transaction as the change),
and the automations to come. It never commits; the caller's commit makes the events visible, and
``session.info[RECORDED]`` asks the app's after-commit hook to wake the stream's readers
(``hub.EVENTS``), so a rolled-back change announces nothing and leaves no event behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import insert as plain_insert
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.schemas.events import RESOURCE_ID, RESOURCE_ROLE, EventIn
from orchestrator.server.db import models as m
from orchestrator.server.db.session import on_commit
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub import EVENTS, Hub

RECORDED = "events_recorded"  # session.info flag: this transaction recorded events


def record(session: Session, events: Sequence[EventIn]) -> int:
    """Add ``events`` to the session's transaction; an event whose id is already stored (or repeated
    in ``events``) is dropped. Returns how many were new."""
    unique = list({event.id: event for event in reversed(events)}.values())[::-1]  # the first of an id wins
    if not unique:
        return 0
    received = utcnow()
    rows = [{"id": event.id, "occurred": event.occurred, "received": received, "event": event.event,
             "resource_id": event.resource[RESOURCE_ID], "resource": event.resource, "related": event.related,
             "payload": event.payload, "follows": event.follows} for event in unique]
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(m.Event).on_conflict_do_nothing(index_elements=[m.Event.id]).returning(m.Event.seq, m.Event.id)
    stored = {row.id: row.seq for row in session.execute(statement, rows)}
    if not stored:
        return 0
    links = [{"event_seq": stored[event.id], "resource_id": labels[RESOURCE_ID], "role": labels[RESOURCE_ROLE],
              "occurred": event.occurred}
             for event in unique if event.id in stored for labels in event.related]
    if links:
        session.execute(plain_insert(m.EventResource), links)
    session.info[RECORDED] = True
    return len(stored)


def announce_recorded(sessions: sessionmaker[Session], hub: Hub) -> Callable[[], None]:
    """Publish ``EVENTS`` after every commit that recorded events through ``sessions`` (stream
    readers on every replica re-read). Returns the function that stops it."""
    return on_commit(sessions, RECORDED, lambda: hub.publish((EVENTS, "")))
