"""Creating runs: the one way every creator writes them (the create-run API, the scheduler,
backfill, and the automations to come).

``run_values`` builds every column of a new SCHEDULED run; ``insert_runs`` writes any number of
them, skipping those whose (deployment, idempotency key) exists, with their first state and its
event (``orchestrator.flow-run.Scheduled``, ``services/emitted.py``). One
builder and one writer, so a run made by the scheduler has exactly the columns one made through the
API has.

Bulk and few statements, because both ends are hot: the API's create-run route (one run, the
API's busiest write) and a scheduler pass (10,000 deployments in a few seconds). PostgreSQL: one
statement for the runs, their states and their events (the rows as JSON documents through
``jsonb_to_recordset``: a C encoder here and a C parser there beat per-value adaptation).
SQLite: one multi-row insert of the runs returning the ids that landed, one of their states, then
``events.record``.

``insert_series`` is the scheduler's form (100,000 deployments' runs ahead in seconds): runs that
share one ``run_values`` row and differ only in id, name, time and idempotency key. On PostgreSQL
the row and its event are sent once per series and the database copies them for each time (the
per-run part is a few short fields), instead of a whole run and a whole event per run; the columns
and the event are the builders' own, so a run made this way equals one made by ``insert_runs``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Dialect, Insert, TextClause, insert, text
from sqlalchemy.orm import Session

from orchestrator.schemas.events import RESOURCE_ID, RESOURCE_NAME
from orchestrator.server.db import models as m
from orchestrator.server.services import create_targets, emitted, events
from orchestrator.server.services.names import random_run_name
from orchestrator.sql import PLAN, PREPARED
from orchestrator.states import DEFAULT_NAMES, StateType

CHUNK = 500  # rows per statement: bounds one statement's size and the time it holds locks
SERIES_CHUNK = 2000  # runs per statement of ``insert_series`` (each far smaller than a whole row)

Row = dict[str, Any]


def run_values(
    *, flow_id: uuid.UUID, deployment_id: uuid.UUID | None, deployment_version: str | None,
    work_pool_name: str | None, work_queue_name: str | None, parameters: dict[str, Any], job_variables: dict[str, Any], tags: Iterable[str],
    idempotency_key: str | None, expected_start_time: dt.datetime, now: dt.datetime,
    dispatched_at: dt.datetime | None = None,
) -> Row:
    """Every column of a new SCHEDULED run of a deployment. ``dispatched_at`` is set only by a
    creator that publishes the run itself after the commit."""
    return {
        "id": uuid.uuid4(),
        "name": random_run_name(),
        "flow_id": flow_id,
        "deployment_id": deployment_id,
        "deployment_version": deployment_version,
        "work_pool_name": work_pool_name,
        "work_queue_name": work_queue_name,
        "parameters": parameters,
        "job_variables": job_variables,
        "tags": sorted(set(tags)),
        "idempotency_key": idempotency_key,
        "state_type": StateType.SCHEDULED,
        "state_name": DEFAULT_NAMES[StateType.SCHEDULED],
        "state_message": None,
        "state_timestamp": now,
        "expected_start_time": expected_start_time,
        "start_time": None,
        "end_time": None,
        "run_count": 0,
        "result": None,
        "worker_name": None,
        "infrastructure_id": None,
        "dispatched_at": dispatched_at,
        "heartbeat_at": None,
        "crash_restarts": 0,
        "flow_version": None,
        "parent_task_run_id": None,
        "created": now,
        "updated": now,
    }


def direct_run_values(*, flow_id: uuid.UUID, name: str | None, parameters: dict[str, Any], tags: Iterable[str],
                      now: dt.datetime, parent_task_run_id: uuid.UUID | None = None) -> Row:
    """Every column of a new run of a flow its own program calls directly (``services/direct_runs``):
    no deployment, pool nor queue -- so no dispatcher publishes it and no worker can claim it --
    and PENDING, the state its creator moves it out of to RUNNING in the same transaction.
    ``parent_task_run_id``: a subflow run's, the task run standing for the call in its caller's run."""
    row = run_values(flow_id=flow_id, deployment_id=None, deployment_version=None, work_pool_name=None,
                     work_queue_name=None, parameters=parameters, job_variables={}, tags=tags, idempotency_key=None,
                     expected_start_time=now, now=now)
    row.update(state_type=StateType.PENDING, state_name=DEFAULT_NAMES[StateType.PENDING],
               parent_task_run_id=parent_task_run_id)
    if name is not None:
        row["name"] = name
    return row


def insert_runs(session: Session, rows: Sequence[Row], *, guard: dict[str, Any] | None = None) -> list[uuid.UUID]:
    """Insert runs built by ``run_values`` and record each one's first state, and its event (a
    run's creation is its first state change); a run whose (deployment, idempotency key) exists
    already is skipped, with its event. Returns the ids inserted (the caller's ids: a creator knows
    which of its runs landed). No commit. On PostgreSQL up to ``CHUNK`` rows are one statement.

    ``guard`` (PostgreSQL, ``create_targets.guard_parameters``): the rows were built from a kept
    target; the statement writes only if its rows are still those versions, else nothing, and
    ``create_targets.Stale`` is raised."""
    inserted: list[uuid.UUID] = []
    postgres = session.get_bind().dialect.name == "postgresql"
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        if postgres:
            stored = emitted.runs_created_rows(session, chunk)  # the events' rows, built as rows
            landed = _insert_postgres(session, chunk, stored, guard)
            if landed and stored:
                events.announce(session, {event["event"] for event in stored})
        else:
            # Built before the first write: on SQLite the write lock is held from it to the commit.
            created = emitted.runs_created(session, chunk)
            landed = _insert_sqlite(session, chunk)
            if landed and created:
                ids = {emitted.resource_id("flow-run", run_id) for run_id in landed}
                events.record(session, [event for event in created if event.resource_id in ids])
        inserted += landed
    return inserted


@dataclass(frozen=True)
class Series:
    """Runs of one ``run_values`` row (``template``; its id, name, time and key are not used), one
    per (expected start time, idempotency key) of ``times``."""

    template: Row
    times: Sequence[tuple[dt.datetime, str]]

    def rows(self) -> list[Row]:
        return [{**self.template, "id": uuid.uuid4(), "name": random_run_name(), "expected_start_time": when,
                 "idempotency_key": key} for when, key in self.times]


def insert_series(session: Session, series: Sequence[Series]) -> int:
    """Insert the runs of each series as ``insert_runs`` would (first state, event, existing
    (deployment, idempotency key) skipped); returns how many landed. No commit."""
    if session.get_bind().dialect.name != "postgresql":
        return len(insert_runs(session, [row for one in series for row in one.rows()]))
    landed = 0
    batch: list[Series] = []
    size = 0
    for one in series:
        batch.append(one)
        size += len(one.times)
        if size >= SERIES_CHUNK:
            landed += _insert_series_postgres(session, batch)
            batch, size = [], 0
    if batch:
        landed += _insert_series_postgres(session, batch)
    return landed


def _insert_series_postgres(session: Session, series: Sequence[Series]) -> int:
    templates = [one.template for one in series]
    created = emitted.runs_created(session, templates)
    runs = []
    ids = iter(_random_ids(sum(len(one.times) for one in series)))
    for k, one in enumerate(series):
        for when, key in one.times:
            run_id = next(ids)
            runs.append({"k": k, "i": run_id, "n": random_run_name(), "y": key, "t": when.isoformat(),
                         "e": emitted.derived_id_text(run_id, "created")})
    if not runs:
        return 0
    # None columns left out: jsonb_to_recordset reads a missing key as NULL, and the document is
    # half the size (PostgreSQL parses it once per statement).
    template_rows = [{"k": k, **{c: v for c, v in row.items() if v is not None and c not in _PER_RUN}}
                     for k, row in enumerate(templates)]
    event_rows = [{**row, "k": k} for k, row in enumerate(events.event_rows(created))]
    landed = session.execute(_series_statement(), {
        "templates": json.dumps(template_rows, default=_json_scalar), "runs": json.dumps(runs),
        "events": events.postgres_document(event_rows)}).scalar_one()
    if landed:
        events.announce(session, {event.event for event in created})
    return int(landed)


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}  # RFC 4122's variant bits


def _random_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as text, as ``str(uuid.uuid4())`` writes them, at a fifth
    of its cost: the scheduler's first pass over 100,000 deployments makes 300,000."""
    digits = os.urandom(16 * count).hex()
    return [f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"
            for h in (digits[i:i + 32] for i in range(0, 32 * count, 32))]


def _insert_sqlite(session: Session, rows: Sequence[Row]) -> list[uuid.UUID]:
    insert_runs_, insert_states = _sqlite_statements()
    # One row (the API's case) as a plain execute: an executemany of one costs a fifth more CPU.
    ids = list(session.execute(insert_runs_, rows[0] if len(rows) == 1 else list(rows)).scalars())
    if ids:
        landed = set(ids)
        states = [{"flow_run_id": row["id"], "type": row["state_type"], "name": row["state_name"],
                   "message": row["state_message"], "timestamp": row["state_timestamp"]}
                  for row in rows if row["id"] in landed]
        session.execute(insert_states, states[0] if len(states) == 1 else states)
    return ids


@functools.cache
def _sqlite_statements() -> tuple[Insert, Insert]:
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # here: a PostgreSQL server never loads it

    table = m.FlowRun.__table__
    runs = (sqlite_insert(table).on_conflict_do_nothing(index_elements=["deployment_id", "idempotency_key"])
            .returning(table.c.id))
    # inline: no RETURNING of the generated state id, which nothing reads.
    return runs, insert(m.FlowRunState.__table__).inline()


def _insert_postgres(session: Session, rows: Sequence[Row], event_rows: list[dict[str, Any]],
                     guard: dict[str, Any] | None) -> list[uuid.UUID]:
    # pydantic's encoder (Rust) writes the ids, times and state names itself: ``json.dumps`` called
    # back into Python for each of a row's eight, ~20 µs of a create's thread (bench/RESULTS.md, issue 22).
    document = to_json(rows).decode()
    values = {"rows": document, "events": events.postgres_document(event_rows), **(guard or {})}
    connection = session.connection()
    # Rows without an idempotency key never meet ON CONFLICT (a NULL key equals no other): all of
    # them land, or, guarded, none when the target changed. So their statement answers with its
    # count alone, no rows: SQLAlchemy then builds no result metadata from the cursor's
    # description, ~120k instructions of a create's ~1,240k (bench/RESULTS.md, issue 22, "round 8").
    counted = all(row["idempotency_key"] is None for row in rows)
    # Prepared at its first execution on a connection (``orchestrator/sql.py``): planned 5 times, not 10.
    result = connection.exec_driver_sql(_postgres_sql(connection.dialect, guard is not None, counted=counted),
                                        values, execution_options=_PREPARED)
    if counted:
        if result.rowcount == 0 and guard is not None:
            raise create_targets.Stale()
        if result.rowcount != len(rows):
            raise RuntimeError(f"{result.rowcount} of {len(rows)} runs without idempotency keys written")
        return [row["id"] for row in rows]
    landed = list(result.scalars())
    if None in landed:  # the guard's mark: the target changed, nothing was written
        raise create_targets.Stale()
    return landed


def _postgres_sql(dialect: Dialect, guarded: bool, *, counted: bool = False) -> str:
    """``_postgres_statement`` as the driver's SQL, run with ``exec_driver_sql``: the create-run
    route's one statement, so SQLAlchemy's per-execution work for a ``text()`` (bound parameters
    processed, the compiled cache looked up) is skipped -- ~0.1 ms of a create's ~2 ms of CPU
    (bench/RESULTS.md, issue 22); its events (logging, tracing) still fire."""
    key = (dialect.driver, dialect.paramstyle, guarded, counted)  # what the compiled text depends on
    sql = _SQL.get(key)
    if sql is None:
        sql = _SQL[key] = str(_postgres_statement(guarded, counted).compile(dialect=dialect))
    return sql


_SQL: dict[tuple[str, str, bool, bool], str] = {}
_PREPARED = {PLAN: PREPARED}


@functools.cache
def _postgres_statement(guarded: bool = False, counted: bool = False) -> TextClause:
    """The runs inserted from the JSON document with ON CONFLICT DO NOTHING; their states written
    from that insert's RETURNING, and the events of those that landed stored (``events``'
    statement, joined to the runs inserted), in the same statement; the ids of the runs that
    landed back. ``guarded``: only while ``create_targets.guard_sql`` has its row; a NULL id back
    when it has not (nothing written). ``counted``: the same writes, the states' INSERT the
    statement itself, answering no rows, only its count (the runs that landed)."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    columns = list(m.FlowRun.__table__.columns)
    names = ", ".join(c.name for c in columns)
    shape = ", ".join(f"{c.name} {c.type.compile(dialect=dialect)}" for c in columns)
    landed_events = (f"SELECT e.* FROM jsonb_to_recordset(CAST(:events AS JSONB)) AS e({events.POSTGRES_SHAPE}) "
                     f"JOIN ins ON e.resource_id = '{emitted.resource_id('flow-run', '')}' || ins.id")
    guard = f"guard AS ({create_targets.guard_sql()}), " if guarded else ""
    runs = (f"WITH {guard}ins AS (INSERT INTO flow_runs ({names}) SELECT {names} "
            f"FROM jsonb_to_recordset(CAST(:rows AS JSONB)) AS r({shape}) "
            f"{'WHERE EXISTS (SELECT 1 FROM guard) ' if guarded else ''}"
            "ON CONFLICT (deployment_id, idempotency_key) DO NOTHING "
            "RETURNING id, state_type, state_name, state_message, state_timestamp), ")
    states = ("INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) "
              "SELECT id, state_type, state_name, state_message, state_timestamp FROM ins")
    if counted:  # PostgreSQL runs every data-modifying WITH to completion, read or not
        return text(f"{runs}{events.postgres_writes(landed_events, new_ids=True)} {states}")
    return text(
        f"{runs}states AS ({states} RETURNING flow_run_id), "
        f"{events.postgres_writes(landed_events, new_ids=True)} "
        "SELECT flow_run_id FROM states"
        f"{' UNION ALL SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM guard)' if guarded else ''}")


_PER_RUN = {"id": "v.i", "name": "v.n", "idempotency_key": "v.y", "expected_start_time": "v.t"}


@functools.cache
def _series_statement() -> TextClause:
    """``_postgres_statement`` for series: each run is its template's row (``t``) with its own id,
    name, key and time (``v``); its event is the template's event (``e``) with the run's event id
    and resource (id and name), for the runs that landed."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    columns = list(m.FlowRun.__table__.columns)
    names = ", ".join(c.name for c in columns)
    shape = ", ".join(f"{c.name} {c.type.compile(dialect=dialect)}" for c in columns)
    values = ", ".join(_PER_RUN.get(c.name, f"t.{c.name}") for c in columns)
    run_resource = f"'{emitted.resource_id('flow-run', '')}' || v.i"
    landed_events = (
        f"SELECT v.e AS id, e.occurred, e.received, e.event, {run_resource} AS resource_id, "
        f"e.resource || jsonb_build_object('{RESOURCE_ID}', {run_resource}, '{RESOURCE_NAME}', v.n) AS resource, "
        "e.related, e.payload, e.follows "
        f"FROM ins JOIN v ON v.i = ins.id JOIN jsonb_to_recordset(CAST(:events AS JSONB)) "
        f"AS e(k integer, {events.POSTGRES_SHAPE}) ON e.k = v.k")
    return text(
        "WITH v AS (SELECT * FROM jsonb_to_recordset(CAST(:runs AS JSONB)) "
        "AS v(k integer, i uuid, n varchar, y varchar, t timestamptz, e uuid)), "
        f"ins AS (INSERT INTO flow_runs ({names}) SELECT {values} FROM v "
        f"JOIN jsonb_to_recordset(CAST(:templates AS JSONB)) AS t(k integer, {shape}) ON t.k = v.k "
        "ON CONFLICT (deployment_id, idempotency_key) DO NOTHING "
        "RETURNING id, state_type, state_name, state_message, state_timestamp), "
        "states AS (INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) "
        "SELECT id, state_type, state_name, state_message, state_timestamp FROM ins RETURNING flow_run_id), "
        f"{events.postgres_writes(landed_events, new_ids=True)} "
        "SELECT count(*) FROM states")


def _json_scalar(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a run row")
