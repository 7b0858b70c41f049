"""Events: recording them (in the caller's transaction), and what the hub hears once they commit.

``record`` is the one writer of the ``events`` table: the API's ``POST /api/events``, every service
that emits an event of its own (a flow run's state change, in the same transaction as the change),
and the automations to come. It never commits; the caller's commit makes the events visible, and
``session.info[RECORDED]`` asks the app's after-commit hook to wake the stream's readers
(``hub.EVENTS``), so a rolled-back change announces nothing and leaves no event behind.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Insert, TextClause, text
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
        stored = session.execute(_postgres_statement(), {"rows": json.dumps(rows, default=_json_scalar)}).scalar_one()
    else:
        stored = _record_sqlite(session, rows)
    if stored:
        session.info[RECORDED] = True
    return int(stored)


# Every state change of every run records an event, and creating a run is the API's hottest write:
# so Core statements built once (the ORM's bulk path costs more than the inserts), and each related
# resource's index row is copied by the database from the stored event, not sent once more.


def _record_sqlite(session: Session, rows: list[dict[str, Any]]) -> int:
    seqs = list(session.execute(_sqlite_insert(), rows[0] if len(rows) == 1 else rows).scalars())
    if seqs and any(row["related"] for row in rows):
        # One writer at a time on SQLite: the rows just stored hold exactly the seqs low..high.
        session.execute(_SQLITE_LINKS, {"low": min(seqs), "high": max(seqs)})
    return len(seqs)


_SQLITE_LINKS = text(
    "INSERT INTO event_resources (event_seq, resource_id, role, occurred) "
    f"SELECT e.seq, json_extract(r.value, '$.\"{RESOURCE_ID}\"'), json_extract(r.value, '$.\"{RESOURCE_ROLE}\"'), "
    "e.occurred FROM events AS e, json_each(e.related) AS r WHERE e.seq BETWEEN :low AND :high")


@functools.cache
def _sqlite_insert() -> Insert:
    from sqlalchemy.dialects.sqlite import insert

    table = m.Event.__table__
    return insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.seq)


@functools.cache
def _postgres_statement() -> TextClause:
    """One statement: the events from a JSON document (encoded and parsed in C), the new ones'
    related resources indexed from what was stored, and how many were new."""
    columns = "id, occurred, received, event, resource_id, resource, related, payload, follows"
    shape = ("id uuid, occurred timestamptz, received timestamptz, event varchar, resource_id varchar, "
             "resource jsonb, related jsonb, payload jsonb, follows uuid")
    return text(
        f"WITH ev AS (INSERT INTO events ({columns}) SELECT {columns} FROM jsonb_to_recordset(CAST(:rows AS JSONB)) "
        f"AS r({shape}) ON CONFLICT (id) DO NOTHING RETURNING seq, related, occurred), "
        "links AS (INSERT INTO event_resources (event_seq, resource_id, role, occurred) "
        f"SELECT ev.seq, x ->> '{RESOURCE_ID}', x ->> '{RESOURCE_ROLE}', ev.occurred "
        "FROM ev, jsonb_array_elements(ev.related) AS x) "
        "SELECT count(*) FROM ev")


def _json_scalar(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)  # UUIDs; anything else in a payload as the bound check counted it


def announce_recorded(sessions: sessionmaker[Session], hub: Hub) -> Callable[[], None]:
    """Publish ``EVENTS`` after every commit that recorded events through ``sessions`` (stream
    readers on every replica re-read). Returns the function that stops it."""
    return on_commit(sessions, RECORDED, lambda: hub.publish((EVENTS, "")))
