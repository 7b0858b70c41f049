"""The statements of a run's path (a transition and its state row, a heartbeat, the infrastructure
report), each built once per shape with bind parameters and kept, so every call after the first
executes the same statement object: SQLAlchemy keeps a statement's cache key on the object and
finds its compiled form in the engine's cache, as its documentation describes for statements
reused with ``bindparam()``. Built anew per call with the values in them (as before), the
statement's construction and its cache key were most of the server's Python per transition:
~0.7 ms of each (bench/RESULTS.md, "The server's round trips per transition" and the section
of branch h5). The values, ids and times are the parameters; ``services/transitions.py`` decides
what is written, these only say how.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    Insert,
    Row,
    Select,
    Update,
    bindparam,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from orchestrator.errors import NotFound
from orchestrator.server.db import models as m
from orchestrator.server.services import emitted
from orchestrator.sql import GENERIC, PLAN
from orchestrator.states import FINAL_STATES, StateType

RUN_ID = "run_id"  # the run's id, in every statement here
# Each reads or writes one run by its id: planned once per pooled connection (``orchestrator/sql.py``).
_GENERIC = {PLAN: GENERIC}
NOW = "now"  # the transition's time, wherever a column takes it by expression (RUNNING's start_time)
# The run path's statements are Core statements on the table, and conditions on them are written with
# ``RUNS``' columns, not ``m.FlowRun``'s attributes: one ORM attribute in a statement makes SQLAlchemy
# execute it as an ORM statement (bench/RESULTS.md, issue 22, branch h5).
RUNS = m.FlowRun.__table__.c
RunRow = Row[Any]  # a run as these statements return it: every column of ``flow_runs``, by name


def new_value(column: str) -> str:
    """The parameter of the value a transition writes into ``column`` (not the column's own name:
    SQLAlchemy reserves that one for the values it binds itself)."""
    return f"new_{column}"


_TRANSITIONS: dict[Hashable, Executable] = {}
_KEPT = 512  # shapes: targets x sources x guards x columns written; a few dozen in practice


def transition(shape: Hashable, columns: Sequence[str], running: bool,
               conditions: Callable[[], Sequence[ColumnElement[bool]]],
               also: Sequence[ColumnElement[Any]] = ()) -> Executable:
    """The guarded ``UPDATE ... RETURNING`` of a transition, kept by ``shape`` (which must name
    everything else given here): ``columns`` set from their ``new_value`` parameters, RUNNING's
    ``start_time`` and ``run_count`` by expression, where the run is ``RUN_ID`` and
    ``conditions()`` hold (their bound values are parameters too), returning the run's columns
    and ``also``. Two threads building one shape at once both build it; either statement is the same."""
    statement = _TRANSITIONS.get(shape)
    if statement is None:
        values: dict[str, Any] = {column: bindparam(new_value(column)) for column in columns}
        if running:
            values["start_time"] = func.coalesce(RUNS.start_time, bindparam(NOW))
            values["run_count"] = RUNS.run_count + 1
        statement = _returning_run(update(m.FlowRun.__table__).where(RUNS.id == bindparam(RUN_ID), *conditions())
                                   .values(**values), *also)
        if len(_TRANSITIONS) >= _KEPT:
            _TRANSITIONS.clear()
        _TRANSITIONS[shape] = statement
    return statement


def guarded(column: Any, parameter: str) -> ColumnElement[bool]:
    """``column = :parameter``: a guard whose value is bound at each call (``transitions.holder``)."""
    return column == bindparam(parameter)  # type: ignore[no-any-return]


# --- the state row ------------------------------------------------------------------------------


def add_state(session: Session, run_id: uuid.UUID, type_: StateType, name: str, message: str | None,
              now: dt.datetime) -> tuple[int, list[emitted.EarlierState]]:
    """Insert the run's new ``flow_run_states`` row. Returns its id and the (at most two) rows
    before it, newest first: the event names the previous state and follows that state's event.
    The run row is locked by the transition's update, so no other state can slip in between.

    On PostgreSQL one statement, the insert in a ``WITH`` whose row the statement's own read does
    not see (a data-modifying CTE runs on the statement's snapshot): one round trip fewer per
    transition, three per run (claim, RUNNING, the final state). SQLite has no such ``WITH``."""
    params = {RUN_ID: run_id, "state_type": type_, "state_name": name, "state_message": message, "at": now}
    if session.get_bind().dialect.name != "postgresql":
        state_id = session.execute(_insert_state(), params).scalar_one()
        rows = session.execute(_earlier_states(), {RUN_ID: run_id, "state_id": state_id}).all()
        return state_id, [emitted.EarlierState(r.id, r.type, r.name, r.message, r.timestamp) for r in rows]
    both = session.execute(_insert_state_and_read_earlier(), params).all()
    found = sorted((r for r in both if r.id is not None), key=lambda r: r.id, reverse=True)
    return both[0].state_id, [emitted.EarlierState(r.id, r.type, r.name, r.message, r.timestamp) for r in found]


@functools.cache
def _insert_state() -> Insert:
    s = m.FlowRunState.__table__
    return insert(s).values(flow_run_id=bindparam(RUN_ID), type=bindparam("state_type"), name=bindparam("state_name"),
                            message=bindparam("state_message"), timestamp=bindparam("at")).returning(s.c.id)


def _earlier(s: Any) -> Select[Any]:
    return (select(s.c.id, s.c.type, s.c.name, s.c.message, s.c.timestamp)
            .where(s.c.flow_run_id == bindparam(RUN_ID)).order_by(s.c.id.desc()).limit(2))


@functools.cache
def _earlier_states() -> Select[Any]:
    s = m.FlowRunState.__table__
    return _earlier(s).where(s.c.id < bindparam("state_id"))


@functools.cache
def _insert_state_and_read_earlier() -> Select[Any]:
    new = _insert_state().cte("new_state")
    before = _earlier(m.FlowRunState.__table__).subquery("earlier")
    return (select(new.c.id.label("state_id"), before.c.id, before.c.type, before.c.name, before.c.message,
                   before.c.timestamp).select_from(new.outerjoin(before, true())).execution_options(**_GENERIC))


# --- lifecycle columns without a change of state ------------------------------------------------


@functools.cache
def read_run() -> Select[Any]:
    """The run by ``RUN_ID``, as a ``RunRow``."""
    return select(*m.FlowRun.__table__.c).where(RUNS.id == bindparam(RUN_ID)).execution_options(**_GENERIC)


@functools.cache
def beat() -> Executable:
    """A heartbeat of a run that is not PENDING (``run_columns.heartbeat``), ``RETURNING`` it."""
    return _returning_run(update(m.FlowRun.__table__)
                          .where(RUNS.id == bindparam(RUN_ID), RUNS.state_type != StateType.PENDING)
                          .values(heartbeat_at=bindparam(new_value("heartbeat_at"))))


@functools.cache
def infrastructure() -> Executable:
    """Where the run's worker started it (``run_columns.set_infrastructure``), ``RETURNING`` it."""
    return _returning_run(update(m.FlowRun.__table__).where(RUNS.id == bindparam(RUN_ID))
                          .values(infrastructure_id=bindparam(new_value("infrastructure_id")), updated=bindparam(NOW)))


@functools.cache
def first_infrastructure() -> Executable:
    """Where the run was started, said by its flow-run process with a heartbeat (an
    older SDK's first, or a beat after a RUNNING report an older API did not keep it from; ``run_columns.heartbeat``): set only while none is, and never on a final run, ``RETURNING`` it."""
    return _returning_run(update(m.FlowRun.__table__)
                          .where(RUNS.id == bindparam(RUN_ID), RUNS.infrastructure_id.is_(None),
                                 RUNS.state_type.not_in(list(FINAL_STATES)))
                          .values(infrastructure_id=bindparam(new_value("infrastructure_id")), updated=bindparam(NOW)))


def _returning_run(statement: Update, *also: ColumnElement[Any]) -> Executable:
    """``statement ... RETURNING`` the run's row (and ``also``): a Core statement, executed by ``run_row``."""
    return statement.returning(*m.FlowRun.__table__.c, *also).execution_options(**_GENERIC)


def read(session: Session, run_id: uuid.UUID) -> RunRow:
    """The run by its id (``read_run``); ``NotFound`` when there is none."""
    run = session.execute(read_run(), {RUN_ID: run_id}).one_or_none()
    if run is None:
        raise NotFound(f"flow run {run_id} not found")
    return run


def run_row(session: Session, statement: Executable, params: Mapping[str, Any]) -> RunRow | None:
    """Execute one of these statements of one run (``params[RUN_ID]``) and answer its row, or None.

    No ORM entity is loaded: a ``FlowRun`` instance per statement (its identity map entry, its
    instance state, the ORM's row processing) was most of the server's CPU of a transition
    (bench/RESULTS.md, issue 22, branch h5). What the ORM did around it is kept: the session's
    pending changes are flushed first, as an ORM statement's autoflush would, and an instance of
    the run the session holds (a caller's ``session.get``) is expired, so it reads what was
    written instead of what it loaded before (the ORM statement refreshed it)."""
    if session.autoflush:
        session.flush()
    row = session.execute(statement, params).one_or_none()
    if session.identity_map:
        loaded = session.identity_map.get(session.identity_key(m.FlowRun, params[RUN_ID]))
        if loaded is not None:
            session.expire(loaded)
    return row


def parameters(run_id: uuid.UUID, values: Mapping[str, Any], *also: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of a kept statement: the run, ``new_value`` of each of ``values``, and ``also``."""
    out: dict[str, Any] = {RUN_ID: run_id, **{new_value(column): value for column, value in values.items()}}
    for more in also:
        out.update(more)
    return out

