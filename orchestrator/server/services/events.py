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

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Dialect
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
    rows = event_rows(events)
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        stored = session.execute(_postgres_statement(), {"rows": postgres_document(rows)}).scalar_one()
    else:
        stored = _record_sqlite(session, rows)
    if stored:
        announce(session)
    return int(stored)


# Every state change of every run records an event, and creating a run is the API's hottest write
# (issue 17: at most 10 % slower with events than without, bench/create_run_api_events.py). So:
# PostgreSQL stores a batch in one statement, which ``new_runs`` also folds into the statement that
# inserts the runs (``postgres_writes``); SQLite, which has one writer at a time, runs two prepared
# statements straight on the driver's cursor, keeping the write lock's span short. Each related
# resource's index row is copied by the database from the stored event, not sent once more.


def event_rows(events: Sequence[EventIn]) -> list[dict[str, Any]]:
    """The rows of the new events among ``events`` (the first of a repeated id wins)."""
    unique = list({event.id: event for event in reversed(events)}.values())[::-1]
    received = utcnow()
    return [{"id": event.id, "occurred": event.occurred, "received": received, "event": event.event,
             "resource_id": event.resource[RESOURCE_ID], "resource": event.resource, "related": event.related,
             "payload": event.payload, "follows": event.follows} for event in unique]


def announce(session: Session) -> None:
    """The transaction stored events: its commit wakes the stream's readers (``announce_recorded``)."""
    session.info[RECORDED] = True


def postgres_document(rows: list[dict[str, Any]]) -> str:
    """``event_rows`` as the JSON document ``postgres_writes`` reads (encoded in C)."""
    return json.dumps(rows, default=_json_scalar)


_COLUMNS = "id, occurred, received, event, resource_id, resource, related, payload, follows"
POSTGRES_SHAPE = ("id uuid, occurred timestamptz, received timestamptz, event varchar, resource_id varchar, "
                  "resource jsonb, related jsonb, payload jsonb, follows uuid")


def postgres_writes(source: str) -> str:
    """CTEs ``ev`` (the events stored: seq, related, occurred) and ``links`` (their related
    resources indexed) storing the event rows of the query ``source`` (columns as
    ``POSTGRES_SHAPE``), for a ``WITH`` of the caller's statement."""
    return (f"ev AS (INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM ({source}) AS src "
            "ON CONFLICT (id) DO NOTHING RETURNING seq, related, occurred), "
            "links AS (INSERT INTO event_resources (event_seq, resource_id, role, occurred) "
            f"SELECT ev.seq, x ->> '{RESOURCE_ID}', x ->> '{RESOURCE_ROLE}', ev.occurred "
            "FROM ev, jsonb_array_elements(ev.related) AS x)")


@functools.cache
def _postgres_statement() -> TextClause:
    """One statement: the events from a JSON document (encoded and parsed in C), the new ones'
    related resources indexed from what was stored, and how many were new."""
    source = f"SELECT * FROM jsonb_to_recordset(CAST(:rows AS JSONB)) AS r({POSTGRES_SHAPE})"
    return text(f"WITH {postgres_writes(source)} SELECT count(*) FROM ev")


def _record_sqlite(session: Session, rows: list[dict[str, Any]]) -> int:
    # The driver's own cursor, in the session's transaction: SQLAlchemy's per-statement work costs
    # more than SQLite's here. The values are bound as SQLAlchemy would bind them (its columns'
    # bind processors), so what is stored is what the ORM reads back.
    connection = session.connection()
    encode = _sqlite_encoders(connection.dialect)
    cursor = connection.connection.cursor()
    try:
        seqs = [seq for row in rows for (seq,) in cursor.execute(_SQLITE_EVENT, encode(row)).fetchall()]
        if seqs and any(row["related"] for row in rows):
            # One writer at a time on SQLite: the rows just stored hold exactly the seqs low..high.
            cursor.execute(_SQLITE_LINKS, (min(seqs), max(seqs)))
    finally:
        cursor.close()
    return len(seqs)


_SQLITE_EVENT = (f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT (id) DO NOTHING RETURNING seq")
_SQLITE_LINKS = (
    "INSERT INTO event_resources (event_seq, resource_id, role, occurred) "
    f"SELECT e.seq, json_extract(r.value, '$.\"{RESOURCE_ID}\"'), json_extract(r.value, '$.\"{RESOURCE_ROLE}\"'), "
    "e.occurred FROM events AS e, json_each(e.related) AS r WHERE e.seq BETWEEN ? AND ?")


@functools.lru_cache(maxsize=8)
def _sqlite_encoders(dialect: Dialect) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    columns = [m.Event.__table__.c[name] for name in _COLUMNS.split(", ")]
    steps = [(c.name, c.type._cached_bind_processor(dialect)) for c in columns]

    def encode(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] if step is None or row[name] is None else step(row[name]) for name, step in steps)

    return encode


def _json_scalar(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)  # UUIDs; anything else in a payload as the bound check counted it


def announce_recorded(sessions: sessionmaker[Session], hub: Hub) -> Callable[[], None]:
    """Publish ``EVENTS`` after every commit that recorded events through ``sessions`` (stream
    readers on every replica re-read). Returns the function that stops it."""
    return on_commit(sessions, RECORDED, lambda: hub.publish((EVENTS, "")))
