"""Events: recording them (in the caller's transaction), and what the hub hears once they commit.

``record`` is the one writer of the ``events`` table: the API's ``POST /api/events``, every service
that emits an event of its own (a flow run's state change, in the same transaction as the change),
and the automations to come. It never commits; the caller's commit makes the events visible, and
``session.info[RECORDED]`` (the names of the events recorded) asks the app's after-commit hook to
wake the stream's readers and the trigger evaluators (``hub.EVENTS``, keyed by those names), so a
rolled-back change announces nothing and leaves no event behind.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic_core import to_json
from sqlalchemy import BigInteger, TextClause, TextualSelect, column, delete, func, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.schemas.events import (
    RESOURCE_ID,
    RESOURCE_ROLE,
    EventIn,
)
from orchestrator.server.db import models as m
from orchestrator.server.db.session import on_commit_with
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub import EVENTS, Hub
from orchestrator.sql import PLAN, PREPARED

RECORDED = "events_recorded"  # session.info: the names of the events this transaction recorded
ANY_NAME = ""  # an EVENTS key naming no event: any may have been recorded
# The EVENTS key lists the names (one per line) unless there are more than this: a NOTIFY payload
# stays small, and a transaction recording so many kinds of events wakes every listener anyway.
KEY_NAMES = 32


def record(session: Session, events: Sequence[EventIn]) -> int:
    """Add ``events`` to the session's transaction; an event whose id is already stored (or repeated
    in ``events``) is dropped. Returns how many were new."""
    return record_rows(session, event_rows(events))


def record_rows(session: Session, rows: list[dict[str, Any]]) -> int:
    """``record`` for rows shaped as ``event_rows`` makes them, with unique ids (the trigger
    evaluator builds its firings' events so: thousands a second, no model in between)."""
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        stored = session.execute(_postgres_statement(), {"rows": postgres_document(rows)}).scalar_one()
    else:
        stored = len(_record_sqlite(session, rows))
    if stored:
        announce(session, {row["event"] for row in rows})
    return int(stored)


def record_batches(session: Session, batches: Sequence[Sequence[EventIn]]) -> list[int]:
    """``record`` of several batches at once (the API's group commit, ``api/ingest.py``): how
    many of each batch were new. An id in two batches counts for the first, as if they had been
    recorded one after the other."""
    if len(batches) == 1:
        return [record(session, batches[0])]
    rows: list[dict[str, Any]] = []
    owner: dict[Any, int] = {}  # event id -> the batch it counts for
    for number, batch in enumerate(batches):
        for row in event_rows(batch):
            if row["id"] not in owner:
                owner[row["id"]] = number
                rows.append(row)
    if session.get_bind().dialect.name == "postgresql":
        stored, new = session.execute(_postgres_ids_statement(), {"rows": postgres_document(rows),
                                                                  "sent": len(rows)}).one()
        # The usual case: all new, and no ids to read back (none new: no array either).
        new = [row["id"] for row in rows] if stored == len(rows) else new or []
    else:
        new = _record_sqlite(session, rows)
    counts = [0] * len(batches)
    for event_id in new:
        counts[owner[event_id]] += 1
    if new:
        announce(session, {row["event"] for row in rows})
    return counts


def record_encoded(session: Session, encoded: list[str], names: set[str]) -> int:
    """``record_rows`` for rows already encoded, each the JSON text ``postgres_document`` makes of
    a row, with unique ids, of events named ``names`` (the trigger evaluator builds its firings'
    events so: one triggering event is quoted by many firings and encoded once, bench/triggers.py)."""
    if not encoded:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        stored = session.execute(_postgres_statement(), {"rows": f"[{','.join(encoded)}]"}).scalar_one()
    else:
        stored = len(_record_sqlite(session, [_decoded(json.loads(row)) for row in encoded]))
    if stored:
        announce(session, names)
    return int(stored)


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    """A row of ``record_encoded`` with the Python values ``event_rows`` gives."""
    return {**row, "id": uuid.UUID(row["id"]), "follows": uuid.UUID(row["follows"]) if row["follows"] else None,
            "occurred": dt.datetime.fromisoformat(row["occurred"]), "received": dt.datetime.fromisoformat(row["received"])}


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


def announce(session: Session, names: Iterable[str]) -> None:
    """The transaction stored events named ``names``: its commit wakes the stream's readers and the
    trigger evaluators (``announce_recorded``)."""
    session.info.setdefault(RECORDED, set()).update(names)


def take_announcement(session: Session) -> list[tuple[str, str]]:
    """The hub event this transaction's commit would publish (``announce_recorded``), taken off
    the session: a caller that publishes events of its own after the commit sends both in one
    ``hub.publish``, so one notification reaches the other replicas instead of two (the
    create-run route: a NOTIFY and its delivery cost more than storing the run's event). Call it
    inside the transaction; a commit that fails then announces nothing, as before."""
    names = session.info.pop(RECORDED, None)
    return [(EVENTS, _key(names))] if names else []


def recorded_names(key: str) -> set[str] | None:
    """The event names an ``EVENTS`` key lists; None when it does not say (any may be new)."""
    return set(key.split("\n")) if key != ANY_NAME else None


def _key(names: set[str]) -> str:
    return "\n".join(sorted(names)) if len(names) <= KEY_NAMES else ANY_NAME


def postgres_document(rows: list[dict[str, Any]]) -> str:
    """``event_rows`` as the JSON document ``postgres_writes`` reads. pydantic's encoder (Rust)
    writes UUIDs and datetimes itself; ``json.dumps`` called back into Python for each, and cost
    about as much as validating the events (bench/RESULTS.md, "Events ingest: where the time goes")."""
    return to_json(rows, fallback=str).decode()  # anything else in a payload as the bound check counted it


_COLUMNS = "id, occurred, received, event, resource_id, resource, related, payload, follows"
POSTGRES_SHAPE = ("id uuid, occurred timestamptz, received timestamptz, event varchar, resource_id varchar, "
                  "resource jsonb, related jsonb, payload jsonb, follows uuid")


def postgres_writes(source: str, *, new_ids: bool = False) -> str:
    """CTEs ``ev`` (the events stored: seq, id, related, occurred) and ``links`` (their related
    resources indexed) storing the event rows of the query ``source`` (columns as
    ``POSTGRES_SHAPE``), for a ``WITH`` of the caller's statement. ``new_ids``: the caller knows no
    id is stored yet (derived from runs the same statement inserts), so no row needs the
    speculative insertion an ``ON CONFLICT`` makes (a tenth of an event's insert)."""
    conflict = "" if new_ids else "ON CONFLICT (id) DO NOTHING "
    return (f"ev AS (INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM ({source}) AS src "
            f"{conflict}RETURNING seq, id, related, occurred), "
            "links AS (INSERT INTO event_resources (event_seq, resource_id, role, occurred) "
            f"SELECT ev.seq, x ->> '{RESOURCE_ID}', x ->> '{RESOURCE_ROLE}', ev.occurred "
            "FROM ev, jsonb_array_elements(ev.related) AS x)")


_FROM_DOCUMENT = f"SELECT * FROM jsonb_to_recordset(CAST(:rows AS JSONB)) AS r({POSTGRES_SHAPE})"


@functools.cache
def _postgres_statement() -> TextualSelect:
    """One statement: the events from a JSON document (``postgres_document``), the new ones'
    related resources indexed from what was stored, and how many were new. Prepared at its first
    execution on a connection (a transition's event, on every run's path: ``orchestrator/sql.py``).
    Its one column declared by position: SQLAlchemy then keeps the result's description with the
    compiled statement, where a plain text statement's (or one whose columns are named) is read
    anew from the cursor at each execution, ~15 µs of every state report (bench/RESULTS.md, issue
    22, branch h1)."""
    return (text(f"WITH {postgres_writes(_FROM_DOCUMENT)} SELECT count(*) FROM ev").columns(column("count", BigInteger))
            .execution_options(**{PLAN: PREPARED}))


@functools.cache
def _postgres_ids_statement() -> TextClause:
    """``_postgres_statement`` answering also the ids of the new events when some of the ``:sent``
    were not (an array of UUIDs; else NULL)."""
    return text(f"WITH {postgres_writes(_FROM_DOCUMENT)} "
                "SELECT count(*), CASE WHEN count(*) < :sent THEN array_agg(id) END FROM ev")


def _record_sqlite(session: Session, rows: list[dict[str, Any]]) -> list[Any]:
    """The ids of the rows that were new."""
    # The driver's own cursor, in the session's transaction: SQLAlchemy's per-statement work costs
    # more than SQLite's here. The values are bound as SQLAlchemy would bind them (its columns'
    # bind processors), so what is stored is what the ORM reads back.
    connection = session.connection()
    encode = _sqlite_encoders(connection.dialect)
    cursor = connection.connection.cursor()
    new: list[Any] = []
    links: list[tuple[Any, ...]] = []
    try:
        for row in rows:
            values = encode(row)
            for (seq,) in cursor.execute(_SQLITE_EVENT, values).fetchall():
                new.append(row["id"])
                # The related resources indexed from the values at hand, one executemany for all:
                # reading them back from the stored text with json_each and json_extract cost a
                # run's create 0.05 ms more (bench/RESULTS.md, "The create-run API and its events").
                links += [(seq, item.get(RESOURCE_ID), item.get(RESOURCE_ROLE), values[1]) for item in row["related"]]
        if links:
            cursor.executemany(_SQLITE_LINKS, links)
    finally:
        cursor.close()
    return new


_SQLITE_EVENT = (f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT (id) DO NOTHING RETURNING seq")
_SQLITE_LINKS = "INSERT INTO event_resources (event_seq, resource_id, role, occurred) VALUES (?, ?, ?, ?)"


@functools.lru_cache(maxsize=8)
def _sqlite_encoders(dialect: Dialect) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    columns = [m.Event.__table__.c[name] for name in _COLUMNS.split(", ")]
    steps = [(c.name, c.type._cached_bind_processor(dialect)) for c in columns]

    def encode(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] if step is None or row[name] is None else step(row[name]) for name, step in steps)

    return encode


def announce_recorded(sessions: sessionmaker[Session], hub: Hub) -> Callable[[], None]:
    """Publish ``EVENTS`` after every commit that recorded events through ``sessions``, keyed by
    their names (stream readers on every replica re-read; trigger evaluators pass when a name may
    concern them). Returns the function that stops it."""
    return on_commit_with(sessions, RECORDED, lambda names: hub.publish((EVENTS, _key(names))))


# --- retention ---------------------------------------------------------------------------------


def delete_older(session: Session, before: dt.datetime, batch: int) -> int:
    """Delete up to ``batch`` of the oldest events that occurred before ``before`` (and their
    related-resource rows). Returns how many events went; the caller commits and calls again until
    0, so no statement holds locks on millions of rows."""
    seqs = select(m.Event.seq).where(m.Event.occurred < before).order_by(m.Event.occurred).limit(batch)
    chosen = session.scalars(seqs).all()
    if not chosen:
        return 0
    # event_resources first: SQLite does not enforce the ON DELETE CASCADE unless asked per connection.
    session.execute(delete(m.EventResource).where(m.EventResource.event_seq.in_(chosen)))
    return session.execute(delete(m.Event).where(m.Event.seq.in_(chosen))).rowcount or 0


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(m.Event)) or 0


class Counts:
    """This process's event counters, for ``/metrics`` (Prometheus adds up the replicas):
    received (in ``POST /api/events``), recorded (new), dropped (duplicates), deleted (retention)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received_total = self.recorded_total = self.dropped_total = self.deleted_total = 0

    def received(self, sent: int, recorded: int) -> None:
        with self._lock:
            self.received_total += sent
            self.recorded_total += recorded
            self.dropped_total += sent - recorded

    def deleted(self, count: int) -> None:
        with self._lock:
            self.deleted_total += count
